"""httptrack's datasette plugin: the call log set up for reading.

For every database that is an httptrack call log (it has the ``calls`` table and the
reporting views), this plugin gives datasette:

- table settings: ``calls`` newest first, facets (provider, model, user, service, status,
  day; counted from the daily rollups on the unfiltered table, see ``_facets``), column
  descriptions from ``_schema``, full-text search over prompts and responses;
- canned queries (cost for one user per day, one session's calls, cost per hour, latency
  percentiles per model), beside the views that live in the database itself;
- JSON bodies and headers rendered indented and folded (``<details>``), streams as text;
- a dashboard at ``/-/httptrack``: headline figures and charts (cost per day, tokens per
  model, cost per user) drawn as inline SVG, so nothing is fetched from anywhere.

``httptrack ui`` registers it; installed beside datasette (``pip install 'httptrack[ui]'``)
it is also found through its entry point, so ``datasette "$(httptrack path)"`` has it too.
It only reads: the database is opened by datasette in read-only mode.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

from datasette import hookimpl
from datasette.utils.asgi import Response
from markupsafe import Markup, escape

from ._facets import RollupColumnFacet, RollupDateFacet
from ._metadata import FTS_QUERY_FUNCTION, database_metadata, is_call_log

__all__ = ["FTS_QUERY_FUNCTION", "dashboard", "is_call_log", "log_databases", "search_terms"]

#: Cells rendered as folded, indented JSON (or as text when they are not JSON).
BODY_COLUMNS = {"request_body", "response_body", "request_headers", "response_headers", "properties"}
_SUMMARY_CHARS = 90


def log_databases(datasette: Any) -> list[str]:
    """Names of the attached databases that are httptrack call logs."""
    return [name for name, db in datasette.databases.items() if is_call_log(getattr(db, "path", None))]


def search_terms(text: str | None) -> str:
    """The SQL function ``FTS_QUERY_FUNCTION``: ``gpt-4o``, ``AND``, ``foo"`` are words to find, not syntax.
    No words at all match nothing (FTS5 refuses an empty query)."""
    from ..log._reader import fts_query

    return fts_query(text or "") or '""'


@hookimpl
def prepare_connection(conn: sqlite3.Connection) -> None:
    conn.create_function(FTS_QUERY_FUNCTION, 1, search_terms, deterministic=True)


@hookimpl
def startup(datasette: Any) -> None:
    # Plain `datasette "$(httptrack path)"` does not get the settings `httptrack ui` runs
    # with. The one that matters most: facet suggestions try every one of ~50 columns of
    # `calls` (seconds on a million calls, for each page). Settings are datasette-wide and a
    # plugin cannot tell the default from an explicit `--setting suggest_facets on`: with a
    # call log attached, suggestions are off.
    if log_databases(datasette) and datasette.setting("suggest_facets"):
        datasette._settings["suggest_facets"] = False


@hookimpl
def register_facet_classes() -> list[type[Any]]:
    # The calls table's facets (see _metadata): datasette's, counted from the rollups
    # when the page shows the whole table.
    return [RollupColumnFacet, RollupDateFacet]


@hookimpl
def get_metadata(datasette: Any, key: str, database: str | None, table: str | None) -> dict[str, Any]:
    names = log_databases(datasette)
    if not names:
        return {}
    return {"databases": {name: database_metadata() for name in names}}


@hookimpl
def render_cell(value: Any, column: str, table: str | None, database: str, datasette: Any) -> Any:
    if table != "calls" or not isinstance(value, str) or not value:
        return None
    if column == "response_text":
        return Markup(
            '<div class="httptrack-text" style="white-space: pre-wrap; max-width: 60em">'
            f"{escape(value)}</div>"
        )
    if column not in BODY_COLUMNS or database not in log_databases(datasette):
        return None
    text = value
    stripped = value.lstrip()
    if stripped[:1] in ("{", "["):
        with contextlib.suppress(ValueError):  # not JSON after all: shown as it is
            text = json.dumps(json.loads(value), indent=2, ensure_ascii=False)
    summary = " ".join(value.split())
    if len(summary) > _SUMMARY_CHARS:
        summary = summary[:_SUMMARY_CHARS] + "…"
    return Markup(
        f'<details class="httptrack-body"><summary>{escape(summary)}</summary>'
        f'<pre style="white-space: pre-wrap; max-height: 40em; overflow: auto">{escape(text)}</pre></details>'
    )


#: The calls table has ~50 described columns: datasette lists them all above the table.
#: Folded into a <details>, the table comes first (descriptions also show in each
#: column's menu).
_FOLD_DESCRIPTIONS = """
const descriptions = document.querySelector("dl.column-descriptions");
if (descriptions) {
  const folded = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "What each column means";
  descriptions.replaceWith(folded);
  folded.append(summary, descriptions);
}
"""


@hookimpl
def extra_body_script(template: str, database: str | None, table: str | None, datasette: Any) -> str | None:
    if template == "table.html" and table == "calls" and database in log_databases(datasette):
        return _FOLD_DESCRIPTIONS
    return None


@hookimpl
def register_routes() -> list[tuple[str, Any]]:
    return [(r"^/-/httptrack$", dashboard)]


@hookimpl
def menu_links(datasette: Any) -> list[dict[str, str]]:
    if not log_databases(datasette):
        return []
    return [{"href": datasette.urls.path("/-/httptrack"), "label": "httptrack dashboard"}]


async def dashboard(datasette: Any, request: Any) -> Response:
    """``/-/httptrack``: headline figures and charts for one call log (``?db=``), over the
    last ``?days=`` days (default 30; 0 for everything)."""
    from ._dashboard import dashboard_context

    names = log_databases(datasette)
    if not names:
        return Response.html("<p>No httptrack call log is attached to this datasette.</p>", status=404)
    name = request.args.get("db") or names[0]
    if name not in names:
        return Response.html(f"<p>{escape(name)} is not an httptrack call log.</p>", status=404)
    try:
        days = max(0, int(request.args.get("days", "30")))
    except ValueError:
        days = 30
    db = datasette.get_database(name)
    context = await db.execute_fn(lambda conn: dashboard_context(conn, db.path, days))
    context.update(database=name, databases=names, days=days, database_url=datasette.urls.database(name))
    html = await datasette.render_template("httptrack_dashboard.html", context, request=request)
    return Response.html(html)
