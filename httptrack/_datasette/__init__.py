"""httptrack's datasette plugin: the call log set up for reading.

For every database that is an httptrack call log (it has httptrack's ``calls`` table), this
plugin gives datasette:

- a page per call that reads as a record (``row.html`` → ``httptrack_call.html``, built by
  ``_record``): status and error first, tokens, cost and its prices, timings, the cache,
  the conversation and the answer, related calls, the raw bodies;
- the calls as a list, one line each (``_table.html`` → ``httptrack_list.html``, from
  ``_listing``), inside datasette's table page with its facets, filters and search;
  ``?_all_columns=1`` gives datasette's own pages, every column;
- table settings: ``calls`` newest first, facets (provider, model, user, service, status,
  day; counted from the daily rollups on the unfiltered table, see ``_facets``), column
  descriptions from ``_schema``, full-text search over prompts and responses; httptrack's
  internal tables hidden, the dashboard and the calls linked first;
- canned queries (cost for one user per day, one session's calls, cost per hour, latency
  percentiles per model), beside the views that live in the database itself;
- costs shown as money in every table, view and query, and written as decimals in CSV
  (``_csv``);
- a dashboard at ``/-/httptrack`` (``_dashboard``): figures, failures, a breakdown, and
  charts drawn as inline SVG, so nothing is fetched from anywhere.

Other databases keep datasette's own pages. ``httptrack ui`` registers the plugin;
installed beside datasette (``pip install 'httptrack[ui]'``) it is also found through its
entry point, so ``datasette "$(httptrack path)"`` has it too. It only reads: the database
is opened by datasette in read-only mode.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from typing import Any
from urllib.parse import quote

from datasette import hookimpl
from datasette.utils import path_with_removed_args, tilde_decode, urlsafe_components
from datasette.utils.asgi import Response
from markupsafe import Markup, escape

from .._format import money, plain_number
from ..log._bodies import COMPRESSED_COLUMNS, ZSTD_MAGIC, body_text, register_functions
from ._csv import csv_decimals
from ._facets import RollupColumnFacet, RollupDateFacet
from ._listing import list_rows
from ._metadata import FTS_QUERY_FUNCTION, database_metadata, is_call_log, links_html
from ._pages import PAGE, PageState, about, estimate, planned_execute

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
def prepare_connection(conn: sqlite3.Connection, database: str, datasette: Any) -> None:
    conn.create_function(FTS_QUERY_FUNCTION, 1, search_terms, deterministic=True)
    # httptrack_body(request_body): a body's text, whether it is stored compressed or not.
    register_functions(conn)
    db = datasette.databases.get(database)
    if db is not None and not db.is_memory and is_call_log(db.path):
        # Every page, JSON, CSV and query of a call log shows bodies as text.
        conn.row_factory = text_row


def text_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> sqlite3.Row:
    """datasette's rows (``sqlite3.Row``), with each body stored compressed (``log/_bodies``)
    as its text: the table's pages and their JSON and CSV, a call's page and its JSON, and
    any SQL query that selects ``request_body`` / ``response_body`` (under any name). What
    SQL computes from a body (``length()``, ``LIKE``) sees the stored value: for the text,
    ``httptrack_body(request_body)``."""
    for value in values:
        if type(value) is bytes and value.startswith(ZSTD_MAGIC):
            values = tuple(
                body_text(v) if type(v) is bytes and v.startswith(ZSTD_MAGIC) else v for v in values
            )
            break
    return sqlite3.Row(cursor, values)


@hookimpl
def startup(datasette: Any) -> None:
    # Plain `datasette "$(httptrack path)"` does not get the settings `httptrack ui` runs
    # with. The one that matters most: facet suggestions try every one of ~50 columns of
    # `calls` (seconds on a million calls, for each page). Settings are datasette-wide and a
    # plugin cannot tell the default from an explicit `--setting suggest_facets on`: with a
    # call log attached, suggestions are off.
    if log_databases(datasette) and datasette.setting("suggest_facets"):
        datasette._settings["suggest_facets"] = False
    # The calls pages' SQL, planned for millions of calls (_pages): datasette has no hook
    # for the SQL of a table page, so each call log's Database runs it through the planner.
    for name in log_databases(datasette):
        db = datasette.get_database(name)
        if not getattr(db, "httptrack_planned", False):
            db.execute = planned_execute(db.execute, _rollups_checker(db.path))
            db.httptrack_planned = True


def _rollups_checker(path: str) -> Any:
    """Whether the log at ``path`` has its rollups (checked until it has: a log of an
    earlier schema gains them when its writer next opens it)."""
    found = False

    def has_rollups() -> bool:
        nonlocal found
        if not found:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                from ..log._rollup import rollups_exist

                found = rollups_exist(conn)
            except sqlite3.Error:
                return False
            finally:
                conn.close()
        return found

    return has_rollups


@hookimpl
def asgi_wrapper(datasette: Any) -> Any:
    # Costs in a call log's CSV as decimals (0.000049), not 4.9e-05: see _csv.
    def is_log_path(path: str) -> bool:
        base = datasette.setting("base_url") or "/"
        name = path[len(base) :] if path.startswith(base) else path.lstrip("/")
        return tilde_decode(name.split("/", 1)[0].removesuffix(".csv")) in log_databases(datasette)

    def wrap(app: Any) -> Any:
        app = csv_decimals(app, is_log_path)

        async def with_page(scope: Any, receive: Any, send: Any) -> None:
            # Each request's page state (_pages): its facets' time budget, its count.
            token = PAGE.set(PageState(time.monotonic()) if scope.get("type") == "http" else None)
            try:
                await app(scope, receive, send)
            finally:
                PAGE.reset(token)

        return with_page

    return wrap


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
    urls = datasette.urls
    links = {name: (urls.path(f"/-/httptrack?db={quote(name)}"), urls.table(name, "calls")) for name in names}
    return {
        # The instance's front page: the way in to each call log first.
        "description_html": "".join(
            (f"<h2>{escape(name)}</h2>" if len(names) > 1 else "") + links_html(*links[name])
            for name in names
        ),
        "databases": {name: database_metadata(*links[name]) for name in names},
    }


#: Columns shown as money wherever they appear in a call log: the table, the views, queries.
MONEY_COLUMNS = frozenset({"cost_usd", "cost_saved_usd", "avg_cost_usd"})


@hookimpl
def render_cell(value: Any, column: str, table: str | None, database: str, datasette: Any) -> Any:
    if column in MONEY_COLUMNS and isinstance(value, int | float) and database in log_databases(datasette):
        return Markup(
            f'<span class="httptrack-money" title="{plain_number(value)} USD">{escape(money(value))}</span>'
        )
    if table == "calls" and column in COMPRESSED_COLUMNS and isinstance(value, bytes):
        value = body_text(value)  # stored compressed: shown as the text it is
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
        with contextlib.suppress(ValueError, RecursionError):  # not JSON after all (or too deep): as it is
            text = json.dumps(json.loads(value), indent=2, ensure_ascii=False)
    summary = " ".join(value.split())
    if len(summary) > _SUMMARY_CHARS:
        summary = summary[:_SUMMARY_CHARS] + "…"
    return Markup(
        f'<details class="httptrack-body"><summary>{escape(summary)}</summary>'
        f'<pre style="white-space: pre-wrap; max-height: 40em; overflow: auto">{escape(text)}</pre></details>'
    )


@hookimpl
def extra_template_vars(
    template: str, database: str | None, table: str | None, request: Any, datasette: Any
) -> Any:
    """On a call log's ``calls`` pages: the list of calls (``_table.html``) and the call's
    record (``row.html``). ``?_all_columns=1`` (or datasette's ``?_col=``) gives
    datasette's own pages instead, every column."""
    if table != "calls" or request is None or database not in log_databases(datasette):
        return {}
    args = request.args
    if template == "table.html":
        if args.get("_all_columns"):
            return {"httptrack_compact_url": path_with_removed_args(request, {"_all_columns"})}
        if "_col" in args or "_nocol" in args:
            return {}
        return _list_vars(datasette, database, request)
    if template == "row.html" and not args.get("_all_columns") and request.url_vars.get("pks"):
        return _call_vars(datasette, database, request.url_vars["pks"])
    return {}


async def _list_vars(datasette: Any, database: str, request: Any) -> dict[str, Any]:
    return {
        "httptrack_list": list_rows,
        "httptrack_count_estimate": await _count_estimate(datasette, database, request),
    }


async def _count_estimate(datasette: Any, database: str, request: Any) -> str | None:
    """ "about 1.2M calls" when the page's exact count was too slow to make (``_pages``)."""
    page = PAGE.get()
    if page is None or not page.count_skipped:
        return None
    from datasette.filters import Filters

    args = request.args
    pairs = [(k, v) for k in args if not (k.startswith("_") and "__" not in k) for v in args.getlist(k)]
    selections = list(Filters(sorted(pairs)).selections())
    search = args.get("_search")
    n = await datasette.get_database(database).execute_fn(lambda conn: estimate(conn, selections, search))
    return None if n is None else about(n)


async def _call_vars(datasette: Any, database: str, pks: str) -> dict[str, Any]:
    from ._record import call_context, related_calls

    (call_id,) = urlsafe_components(pks)[:1] or [""]
    db = datasette.get_database(database)

    def read(conn: sqlite3.Connection) -> dict[str, Any]:
        cursor = conn.execute("SELECT * FROM calls WHERE id = ?", [call_id])
        found = cursor.fetchone()
        if found is None:
            return {}
        row = dict(zip([d[0] for d in cursor.description], found, strict=True))
        for column in COMPRESSED_COLUMNS:
            row[column] = body_text(row.get(column))
        return {
            "httptrack_call": call_context(row),
            "httptrack_session": related_calls(conn, "session", row.get("session"), call_id),
            "httptrack_same_key": related_calls(conn, "cache_key", row.get("cache_key"), call_id),
        }

    result: dict[str, Any] = await db.execute_fn(read)
    return result


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
    """``/-/httptrack``: headline figures, failures, a breakdown (``?by=``) and charts for one
    call log (``?db=``), over the last ``?days=`` days (default 30; 0 for everything)."""
    from ._dashboard import BREAKDOWNS, dashboard_context, parse_days

    names = log_databases(datasette)
    if not names:
        return await _error(datasette, request, "No httptrack call log is attached to this datasette.", 404)
    name = request.args.get("db") or names[0]
    if name not in names:
        return await _error(datasette, request, f"{name} is not an httptrack call log.", 404)
    try:
        days = parse_days(request.args.get("days"))
    except ValueError as exc:
        return await _error(datasette, request, str(exc), 400)
    by = request.args.get("by") or "requested_model"
    if by not in BREAKDOWNS:
        return await _error(datasette, request, f"by must be one of {', '.join(BREAKDOWNS)}, not {by!r}", 400)
    db = datasette.get_database(name)
    context = await db.execute_fn(lambda conn: dashboard_context(conn, db.path, days, by))
    context.update(database=name, databases=names, days=days, database_url=datasette.urls.database(name))
    html = await datasette.render_template("httptrack_dashboard.html", context, request=request)
    return Response.html(html)


async def _error(datasette: Any, request: Any, message: str, status: int) -> Response:
    title = "Not found" if status == 404 else "Bad request"
    html = await datasette.render_template(
        "error.html", {"error": message, "title": title, "status": status}, request=request
    )
    return Response.html(html, status=status)
