"""How fast the call log answers on a big database.

Generates a database of N calls (default one million) with realistic distributions —
a few providers and many models with skewed popularity, a long tail of users, bursts of
errors, cache hits, log-normal tokens and latencies, prompts and answers drawn from a word
list — through direct SQL inserts into the real schema (migrations first; the search
index and the rollups are then brought up to date with the functions the writer calls),
then times what people run: the CLI commands (each a fresh process, as a user types them)
and the Python API calls behind them, and prints a table.

    python benchmarks/bench_log.py                 # 1,000,000 calls, reuses the generated DB
    python benchmarks/bench_log.py --rows 100000 --fresh
    python benchmarks/bench_log.py --writer        # also: what the search index and rollups cost the writer
    python benchmarks/bench_log.py --rows 500000 --written --http   # written through TrackingTransport
                                                   # and the writer (benchmarks/_written.py); over HTTP
    python benchmarks/bench_log.py --db LOG --upgrade   # a schema-3 copy of LOG upgraded by a writer

The database is kept (default ``benchmarks/.data/log-<rows>.db``) so reruns skip generation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: The checkout whose httptrack is measured: this one, or another's (``HTTPTRACK_BENCH_CODE``:
#: main's, for the "before" column).
CODE = Path(os.environ.get("HTTPTRACK_BENCH_CODE") or ROOT)
sys.path.insert(0, str(CODE))

from httptrack._exchange import new_call_id  # noqa: E402
from httptrack.log._schema import COLUMN_NAMES  # noqa: E402
from httptrack.log._sqlite import connect, migrate  # noqa: E402

#: provider -> [(model, weight, $ per 1M input tokens, $ per 1M output tokens)]
MODELS: dict[str, list[tuple[str, float, float, float]]] = {
    "openai": [
        ("gpt-4o-mini", 40, 0.15, 0.60),
        ("gpt-4o", 12, 2.5, 10.0),
        ("gpt-4.1-mini", 10, 0.4, 1.6),
        ("o4-mini", 4, 1.1, 4.4),
        ("text-embedding-3-small", 20, 0.02, 0.0),
        ("gpt-5", 3, 1.25, 10.0),
    ],
    "anthropic": [
        ("claude-sonnet-4-6", 20, 3.0, 15.0),
        ("claude-haiku-4-5", 25, 1.0, 5.0),
        ("claude-opus-4-1", 2, 15.0, 75.0),
    ],
    "gemini": [("gemini-2.5-flash", 15, 0.3, 2.5), ("gemini-2.5-pro", 3, 1.25, 10.0)],
    "ollama": [("llama3.2", 10, 0.0, 0.0), ("qwen2.5-coder", 5, 0.0, 0.0), ("nomic-embed-text", 5, 0.0, 0.0)],
    "mistral": [("mistral-small-latest", 5, 0.1, 0.3), ("mistral-large-latest", 1, 2.0, 6.0)],
    "groq": [("llama-3.3-70b-versatile", 4, 0.59, 0.79)],
}
PROVIDER_WEIGHTS = {"openai": 45, "anthropic": 28, "gemini": 10, "ollama": 8, "mistral": 5, "groq": 4}
HOSTS = {
    "openai": "api.openai.com",
    "anthropic": "api.anthropic.com",
    "gemini": "generativelanguage.googleapis.com",
    "ollama": "localhost:11434",
    "mistral": "api.mistral.ai",
    "groq": "api.groq.com",
}
SERVICES = [
    "summarizer",
    "support-bot",
    "search",
    "ingest",
    "code-review",
    "translator",
    "reports",
    "chat-ui",
    "classifier",
    "eval",
    "digest",
    None,
]
WORDS = """the a of to and in is it you that for on with as are this be at or from have not by an they we can
invoice customer refund order shipping delay summary meeting notes quarterly revenue forecast python
function error traceback database query index migration latency budget contract clause translate
french german spanish recipe garden weather paris london berlin tokyo model prompt answer question
explain write review code test deploy server cache memory thread async stream token cost price
report chart table column row schedule email reply draft policy security password account login""".split()  # noqa: SIM905
DAYS = 90
BODY_POOL = 5000


def _zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1.0 / (k**s) for k in range(1, n + 1)]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n)).capitalize() + "."


def _bodies(rng: random.Random) -> tuple[list[str], list[str]]:
    """Pools of request bodies (chat JSON, ~0.5-3 KB) and generated texts (~0.2-1.5 KB)."""
    requests, texts = [], []
    for _ in range(BODY_POOL):
        system = _sentence(rng, rng.randint(10, 60))
        turns = [{"role": "system", "content": system}]
        for i in range(rng.choice([1, 1, 1, 3, 5])):
            turns.append(
                {"role": "user" if i % 2 == 0 else "assistant", "content": _sentence(rng, rng.randint(8, 80))}
            )
        requests.append(json.dumps({"model": "MODEL", "messages": turns, "temperature": 0.2}))
        texts.append(" ".join(_sentence(rng, rng.randint(6, 25)) for _ in range(rng.randint(2, 10))))
    return requests, texts


def _rows(n: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """``n`` generated calls, as rows in ``COLUMN_NAMES`` order (bodies as text)."""
    for row, _ in _generated(n, seed):
        yield row


def _generated(
    n: int, seed: int = 7, store: Callable[[str], Any] | None = None, pool: list[list[str]] | None = None
) -> Iterator[tuple[tuple[Any, ...], int]]:
    """``n`` generated calls: (row, index of its request body in the pool).

    ``store`` turns a body into what goes in the table (the bulk load compresses them as the
    writer does); each distinct body is made and stored once. ``pool``, if given, receives
    the pool of request bodies (as ``[requests]``)."""
    rng = random.Random(seed)
    requests, texts = _bodies(rng)
    if pool is not None:
        pool.append(requests)
    keep: Callable[[str], Any] = store or (lambda body: body)
    made: dict[tuple[int, int, str], Any] = {}
    providers = list(PROVIDER_WEIGHTS)
    provider_cum = list(itertools.accumulate(PROVIDER_WEIGHTS.values()))
    model_cum = {p: list(itertools.accumulate(m[1] for m in models)) for p, models in MODELS.items()}
    users = [f"user-{i:03d}" for i in range(300)]
    user_cum = list(itertools.accumulate(_zipf_weights(len(users))))
    end = datetime.now(UTC).timestamp()
    start = end - DAYS * 86400
    # More calls lately (a product that grows): times drawn from a rising density.
    times = sorted(start + (end - start) * math.sqrt(rng.random()) for _ in range(n))
    index = {name: i for i, name in enumerate(COLUMN_NAMES)}
    blank = [None] * len(COLUMN_NAMES)
    for ts in times:
        provider = rng.choices(providers, cum_weights=provider_cum)[0]
        model, _, price_in, price_out = rng.choices(MODELS[provider], cum_weights=model_cum[provider])[0]
        embeddings = "embed" in model
        stream = not embeddings and rng.random() < 0.55
        row = list(blank)
        input_tokens = int(rng.lognormvariate(6.7, 0.9))
        output_tokens = 0 if embeddings else int(rng.lognormvariate(5.5, 0.8))
        roll = rng.random()
        error = roll < 0.025
        cached = not error and roll < 0.10
        latency = (
            rng.lognormvariate(4.0, 0.5)
            if embeddings
            else rng.lognormvariate(6.0, 0.4) + output_tokens * rng.uniform(8, 25)
        )
        cost = (input_tokens * price_in + output_tokens * price_out) / 1e6
        asked = rng.randrange(BODY_POOL)
        body = made.get((0, asked, model))
        if body is None:
            body = made[(0, asked, model)] = keep(requests[asked].replace("MODEL", model))
        values = {
            "id": new_call_id(ts),
            "started_at": datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "provider": provider,
            "host": HOSTS[provider],
            "method": "POST",
            "endpoint": "/v1/embeddings" if embeddings else "/v1/chat/completions",
            "operation": "embeddings" if embeddings else "chat",
            "model": model,
            "response_model": f"{model}-2025-01-01" if provider == "openai" else model,
            "stream": int(stream),
            "user": rng.choices(users, cum_weights=user_cum)[0] if rng.random() > 0.08 else None,
            "service": rng.choice(SERVICES),
            "session": f"s-{rng.randrange(200_000)}" if rng.random() < 0.3 else None,
            "request_body": body,
            "request_bytes": len(requests[asked]) + len(model) - 5,
            "pid": 4242,
            "tokens_estimated": 0,
            "cached": int(cached),
            "body_truncated": 0,
        }
        if error:
            status = rng.choice([429, 429, 500, 503, 400])
            values.update(
                status="error",
                outcome="complete",
                http_status=status,
                error_code=f"http_{status}",
                error_message="Rate limit reached" if status == 429 else "Server error",
                cost_usd=0.0,
                latency_ms=round(rng.lognormvariate(5.0, 0.6), 3),
            )
        else:
            answer = -1 if embeddings else rng.randrange(BODY_POOL)
            text = None if answer < 0 else texts[answer]
            reply = made.get((1, answer, model))
            if reply is None:
                reply = made[(1, answer, model)] = keep(
                    json.dumps(
                        {
                            "id": "chatcmpl-x",
                            "model": model,
                            "choices": [{"message": {"role": "assistant", "content": text}}],
                        }
                    )
                    if text
                    else '{"data": []}'
                )
            values.update(
                status="success",
                outcome="complete",
                http_status=200,
                finish_reason=None if embeddings else "stop",
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                total_tokens=input_tokens + output_tokens,
                cached_input_tokens=int(input_tokens * 0.6) if rng.random() < 0.2 else 0,
                cost_usd=0.0 if cached else round(cost, 10),
                cost_saved_usd=round(cost, 10) if cached else None,
                latency_ms=round(rng.uniform(2, 9) if cached else latency, 3),
                ttft_ms=round(latency * rng.uniform(0.05, 0.3), 3) if stream and not cached else None,
                response_text=text,
                response_body=reply,
            )
        for key, value in values.items():
            row[index[key]] = value
        yield tuple(row), asked


def generate(path: Path, n: int, progress: bool = True) -> float:
    """Create ``path`` with ``n`` calls through the real schema. Returns the seconds it took.

    A bulk load (5 million calls in well under an hour on 2 shared cores) that ends in the
    database the writer would have made: migrations first (every table, index, view); then
    the secondary indexes dropped while rows go in, in transactions of 50,000 with the
    journal off, bodies compressed as the writer stores them (``_bodies.Compressor``),
    each call's search-index entry inserted with it (the prompt text as the writer's SQL
    picks it out of the request body, worked out once per body of the pool); then the
    rollups brought up to date with the function the writer calls, the indexes built
    again (each a sort), ANALYZE, and the journal back to WAL."""
    from httptrack.log import _rollup, _views
    from httptrack.log._bodies import COMPRESSED_COLUMNS, Compressor

    t0 = time.perf_counter()

    def say(what: str) -> None:
        if progress:
            print(f"  {what} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = connect(path)
    migrate(conn)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    indexes: list[tuple[str, str]] = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'calls' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    searchable = _views.search_index_exists(conn)

    # The bodies as the writer stores them: compressed when long (the same Compressor).
    compressor = Compressor()
    at = COLUMN_NAMES.index(COMPRESSED_COLUMNS[0])
    blank = [None] * len(COLUMN_NAMES)

    def store(body: str) -> Any:
        row = list(blank)
        row[at] = body
        return compressor.rows([tuple(row)])[0][at]

    pool: list[list[str]] = []
    rows = _generated(n, store=store, pool=pool)
    # What the search index holds for each request body of the pool: the writer's own SQL
    # expression (``_views.prompt_text_sql``) over it, so that the index is the one the
    # writer makes (and unindexing a call, which hands the same text back, works).
    first = next(rows, None)
    prompts: list[str | None] = []
    if first is not None:
        prompt_of = f"SELECT {_views.prompt_text_sql(':body')}"
        prompts = [conn.execute(prompt_of, {"body": body}).fetchone()[0] for body in pool[0]]
        rows = itertools.chain([first], rows)
    columns = ", ".join(COLUMN_NAMES)
    insert = f"INSERT INTO calls (rowid, {columns}) VALUES (?, {', '.join('?' * len(COLUMN_NAMES))})"
    index_text = f"INSERT INTO {_views.FTS_TABLE} (rowid, prompt, response) VALUES (?, ?, ?)"
    response_at = COLUMN_NAMES.index("response_text")
    done = 0
    while done < n:
        chunk = list(itertools.islice(rows, 50_000))
        if not chunk:
            break
        conn.execute("BEGIN")
        conn.executemany(insert, [(done + 1 + i, *row) for i, (row, _) in enumerate(chunk)])
        if searchable:
            conn.executemany(
                index_text,
                [(done + 1 + i, prompts[asked], row[response_at]) for i, (row, asked) in enumerate(chunk)],
            )
        conn.execute("COMMIT")
        done += len(chunk)
        if progress:
            print(f"\r  inserted {done:,}/{n:,} calls", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    say("rolling up")
    conn.execute("BEGIN")
    _rollup.roll_up_new_rows(conn)
    conn.execute("COMMIT")
    for name, sql in indexes:
        say(f"building {name}")
        conn.execute(sql)
    say("analyzing")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    say("done")
    return time.perf_counter() - t0


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(best, median) seconds over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def _cli(db: Path, *args: str) -> Callable[[], Any]:
    exe = shutil.which("httptrack")
    command = [exe] if exe else [sys.executable, "-m", "httptrack.cli"]

    def run() -> None:
        subprocess.run(
            [*command, *args, "--db", str(db)],
            check=True,
            stdout=subprocess.DEVNULL,
            cwd=CODE,
            env={**os.environ, "PYTHONPATH": str(CODE)},
        )

    return run


def _recent_day(db: Path) -> str:
    """The day before the newest call's (a whole day of calls)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (day,) = conn.execute("SELECT date(max(started_at), '-1 day') FROM calls").fetchone()
    finally:
        conn.close()
    return str(day)


def _datasette_cases(db: Path) -> list[tuple[str, Callable[[], Any]]]:
    """Pages of ``httptrack ui``, served in-process (no HTTP): what datasette itself takes."""
    try:
        from httptrack.cli._ui import make_datasette
    except ImportError:  # pragma: no cover - datasette not installed
        return []
    import asyncio

    ds = make_datasette(db)
    name = db.stem

    def page(path: str) -> Callable[[], Any]:
        def get() -> None:
            response = asyncio.run(ds.client.get(path))
            assert response.status_code == 200, (path, response.status_code)
            assert "timed out" not in response.text.lower() or path.endswith(".json"), path

        return get

    def facets(query: str = "") -> Callable[[], Any]:
        def get() -> None:
            response = asyncio.run(ds.client.get(f"/{name}/calls.json?_size=50{query}"))
            assert response.status_code == 200, response.status_code
            # datasette 0.65's JSON has no list of the facets that timed out: they are missing.
            facets = list(response.json()["facet_results"])
            assert len(facets) == 6, f"facets timed out: only {facets}"

        return get

    from datasette.app import Datasette

    plain = Datasette([str(db)])  # `datasette "$(httptrack path)"`: the plugin, none of ui's settings

    def plain_page() -> None:
        response = asyncio.run(plain.client.get(f"/{name}/calls.json?_size=50"))
        assert response.status_code == 200, response.status_code

    # What clicking a facet's value gives (and two of them): the provider, model, status and
    # day facets from the detail rollup where the filters are on its columns, the rest
    # counted from the matching calls. A day with calls in every database this generates.
    day = _recent_day(db)
    filtered = [
        ("status=error", "&status=error"),
        ("provider=openai", "&provider=openai"),
        ("model=claude-sonnet-4-6", "&model=claude-sonnet-4-6"),
        ("user=user-000 (19%)", "&user=user-000"),
        ("user=user-250", "&user=user-250"),
        ("service=search", "&service=search"),
        ("started_at__date=<day>", f"&started_at__date={day}"),
        ("provider=openai&status=error", "&provider=openai&status=error"),
        ("user=user-000&provider=openai", "&user=user-000&provider=openai"),
        ("service=search&started_at__date=<day>", f"&service=search&started_at__date={day}"),
    ]
    return [
        ("ui: calls table, 50 rows + 6 facets", facets()),
        *((f"ui: calls?{label}", facets(query)) for label, query in filtered),
        ("plain datasette: calls table", plain_page),
        # A phrase: about 0.5% of the prompts (single words of the small vocabulary are in most).
        (
            'ui: calls?_search="refund policy"',
            page(f"/{name}/calls.json?_search=%22refund+policy%22&_size=50"),
        ),
        ("ui: cost_per_day view", page(f"/{name}/cost_per_day.json")),
        ("ui: cost_by_user view", page(f"/{name}/cost_by_user.json")),
        ("ui: errors view", page(f"/{name}/errors.json")),
        ("ui: dashboard, last 30 days", page("/-/httptrack")),
        ("ui: dashboard, everything, by user", page("/-/httptrack?days=0&by=user")),
        ("ui: calls page (the list, HTML)", page(f"/{name}/calls")),
        ("ui: calls page?status=error (HTML)", page(f"/{name}/calls?status=error")),
        ("ui: a call's page", page(f"/{name}/calls/{_newest_id(db)}")),
    ]


def _newest_id(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("SELECT max(id) FROM calls").fetchone()[0])
    finally:
        conn.close()


def bench_queries(db: Path, repeat: int, warm: bool = True) -> list[tuple[str, float, float]]:
    import httptrack

    log = httptrack.open_log(db)
    cases: list[tuple[str, Callable[[], Any]]] = [
        (
            "cli: httptrack --version (startup)",
            lambda: subprocess.run(
                [sys.executable, "-m", "httptrack.cli", "--version"],
                check=True,
                stdout=subprocess.DEVNULL,
                cwd=ROOT,
            ),
        ),
        ("cli: httptrack stats", _cli(db, "stats")),
        ("cli: httptrack stats --by model", _cli(db, "stats", "--by", "model")),
        ("cli: httptrack stats --by day", _cli(db, "stats", "--by", "day")),
        ("cli: httptrack stats --since 1d --by user", _cli(db, "stats", "--since", "1d", "--by", "user")),
        (
            "cli: httptrack stats --provider openai --by model",
            _cli(db, "stats", "--provider", "openai", "--by", "model"),
        ),
        ("cli: httptrack stats --cached", _cli(db, "stats", "--cached")),
        (
            "cli: httptrack stats --status error --by operation",
            _cli(db, "stats", "--status", "error", "--by", "operation"),
        ),
        ("cli: httptrack stats -u user-250 --by model", _cli(db, "stats", "-u", "user-250", "--by", "model")),
        ("cli: httptrack stats -q refund (in most calls)", _cli(db, "stats", "-q", "refund")),
        ("cli: httptrack calls --since 1d", _cli(db, "calls", "--since", "1d")),
        ("cli: httptrack calls --user user-250", _cli(db, "calls", "--user", "user-250")),
        ("cli: httptrack calls -q refund (in most calls)", _cli(db, "calls", "-q", "refund")),
        ("cli: httptrack calls -q '\"refund policy\"'", _cli(db, "calls", "-q", '"refund policy"')),
        ("cli: httptrack calls -q refund -u user-250", _cli(db, "calls", "-q", "refund", "-u", "user-250")),
        ("cli: httptrack status", _cli(db, "status")),
        ("api: stats()", lambda: log.stats()),
        ("api: stats(by='model')", lambda: log.stats(by="model")),
        ("api: list(calls(since='1d', limit=50))", lambda: list(log.calls(since="1d", limit=50))),
        ("api: every calls(since='1d') as CallRecord", lambda: sum(1 for _ in log.calls(since="1d"))),
        ("api: every rows(since='1d') as dict", lambda: sum(1 for _ in log.rows(since="1d"))),
        (
            "cli: httptrack calls --since 1d -n 0 --json",
            _cli(db, "calls", "--since", "1d", "-n", "0", "--json"),
        ),
        ("api: list(calls(status='error', limit=50))", lambda: list(log.calls(status="error", limit=50))),
    ]
    cases += _datasette_cases(db)
    results = []
    for name, fn in cases:
        if warm:
            fn()  # warm: the OS page cache, as on any machine that used the log before
        best, median = _time(fn, repeat)
        results.append((name, best, median))
        print(f"  {name:<46} {best * 1000:8.0f} ms  (median {median * 1000:.0f} ms)", file=sys.stderr)
    log.close()
    return results


def _captured_exchanges(n: int) -> list[Any]:
    """``n`` real exchanges (OpenAI chat, plain and streamed; Anthropic messages), captured
    where the transport hands them to the background writer."""
    import httpx2

    import httptrack
    from httptrack._fake import mock_transport
    from httptrack.record._writer import writer

    captured: list[Any] = []
    w = writer()
    w.submit = captured.append  # type: ignore[method-assign]
    try:
        client = httpx2.Client(
            transport=httptrack.TrackingTransport(mock_transport(httpx2), cache=False),
            headers={"authorization": "Bearer sk-x", "anthropic-version": "2023-06-01"},
        )
        with client:
            for i in range(n):
                ask = [{"role": "user", "content": f"Question {i}: {WORDS[i % len(WORDS)]} and more words"}]
                if i % 3 == 0:
                    with client.stream(
                        "POST",
                        "https://api.openai.com/v1/chat/completions",
                        json={
                            "model": "gpt-4o-mini",
                            "messages": ask,
                            "stream": True,
                            "stream_options": {"include_usage": True},
                        },
                    ) as reply:
                        reply.read()
                elif i % 3 == 1:
                    client.post(
                        "https://api.openai.com/v1/chat/completions",
                        json={"model": "gpt-4o-mini", "messages": ask},
                    )
                else:
                    client.post(
                        "https://api.anthropic.com/v1/messages",
                        json={"model": "claude-haiku-4-5", "max_tokens": 50, "messages": ask},
                    )
    finally:
        del w.submit
    return captured


def bench_writer(calls: int = 1500) -> list[tuple[str, float, float]]:
    """What the search index and the daily rollup cost the background writer, end to end:
    real exchanges turned into rows (parse, price, redact) and written one transaction per
    batch, as the writer does, into a database with them and one without; per call."""
    import tempfile

    from httptrack.record import _writer as _store

    exchanges = _captured_exchanges(calls)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for batch in (1, 10, 100):
            timings = {}
            for derived in (False, True):
                path = Path(folder) / f"w-{batch}-{derived}.db"
                settings = exchanges[0].settings.replace(db=path)
                for exchange in exchanges:
                    exchange.settings = settings
                writer = _store.Writer()
                writer._write(exchanges[:1])  # create and migrate
                store = writer._logs[path].backend  # log/_sqlite.Store
                store._searchable = store._rolled_up = derived
                t0 = time.perf_counter()
                for i in range(1, len(exchanges), batch):
                    writer._write(exchanges[i : i + batch])
                timings[derived] = (time.perf_counter() - t0) / (len(exchanges) - 1)
                writer.close_connections()
            results.append((f"writer, batches of {batch}", timings[False], timings[True]))
            print(
                f"  batches of {batch:>3}: {timings[False] * 1e6:6.0f} us/call without, "
                f"{timings[True] * 1e6:6.0f} us/call with search index + rollup",
                file=sys.stderr,
            )
    return results


def _rows_now(n: int, seed: int) -> list[tuple[Any, ...]]:
    """``n`` generated calls as the writer sees them arrive: started now, one after another
    (ids and times in order, as a live app's are), not spread over the past 90 days."""
    at, started = COLUMN_NAMES.index("id"), COLUMN_NAMES.index("started_at")
    now = time.time()
    out = []
    for i, row in enumerate(_rows(n, seed)):
        ts = now + i * 0.002
        values = list(row)
        values[at] = new_call_id(ts)
        values[started] = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        out.append(tuple(values))
    return out


#: A reader process for ``--readers``: a read transaction held ``hold`` seconds, again and
#: again (the UI or the CLI in use): the WAL can never be reset while one is open.
_READER = """
import sqlite3, sys, time
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, isolation_level=None)
while True:
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM (SELECT 1 FROM calls ORDER BY rowid DESC LIMIT 2000)").fetchall()
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
"""


def _write_timed(path: Path, rows: list[tuple[Any, ...]], batch: int, warm: int) -> tuple[float, int]:
    """The writer thread's CPU per row (µs) for ``rows[warm:]``, written ``batch`` per
    transaction through ``Store.write`` after ``rows[:warm]`` (which warm its page cache, as
    a writer that has run a while has), derived data included; and the largest WAL seen."""
    from httptrack.log._sqlite import Store

    store = Store(path)
    for i in range(0, warm, batch):
        store.write(rows[i : min(i + batch, warm)])
    store.catch_up()
    wal = Path(f"{path}-wal")
    largest = 0
    t0 = time.thread_time()
    for i in range(warm, len(rows), batch):
        store.write(rows[i : i + batch])
        largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    store.catch_up()
    cpu = time.thread_time() - t0
    store.close()
    return cpu / (len(rows) - warm) * 1e6, largest


def bench_writer_growth(
    big: Path, rows: int, *, batch: int = 100, warm: int = 10_000, readers: int = 0, rounds: int = 2
) -> list[tuple[str, float, int]]:
    """Issue 19's "writer CPU per row on a 1M-call log within 1.5x of an empty one": the
    same generated calls written into a new log and into ``big`` (they stay there: it
    grows by ``(warm + rows) * rounds`` calls), alternately, ``readers`` processes holding
    read transactions on each meanwhile. (log, median µs per row, largest WAL)."""
    import tempfile

    cpu: dict[str, list[float]] = {"empty": [], "big": []}
    wals: dict[str, int] = {"empty": 0, "big": 0}
    with tempfile.TemporaryDirectory(prefix="httptrack-writer-") as folder:
        for round_ in range(rounds):
            for name in ("empty", "big"):
                path = big if name == "big" else Path(folder) / f"empty-{round_}.db"
                data = _rows_now(rows + (warm if name == "big" else 1_000), seed=100 + round_)
                if name == "empty":
                    connect(path).close()  # so readers have a file to open
                    conn = connect(path)
                    migrate(conn)
                    conn.close()
                procs = [
                    subprocess.Popen([sys.executable, "-c", _READER, str(path), str(0.3 + 0.2 * i)])
                    for i in range(readers)
                ]
                try:
                    per_row, wal = _write_timed(path, data, batch, warm if name == "big" else 1_000)
                finally:
                    for proc in procs:
                        proc.kill()
                        proc.wait()
                cpu[name].append(per_row)
                wals[name] = max(wals[name], wal)
                print(
                    f"  round {round_ + 1}, {name:<5}: {per_row:6.0f} us CPU per row, WAL up to "
                    f"{wal / 1e6:.1f} MB",
                    file=sys.stderr,
                )
    return [(name, statistics.median(cpu[name]), wals[name]) for name in ("empty", "big")]


#: The busiest user of every generated log (the Zipf head: about 19% of the calls).
BUSIEST_USER = "user-000"


def issue_cases(db: Path, http: str | None = None) -> list[tuple[str, Callable[[], Any]]]:
    """Issue 23's table: the admin's moves in ``httptrack ui`` (through datasette's own test
    client, or over HTTP to a running ``httptrack ui`` at ``http``) and the CLI's."""
    import asyncio
    import urllib.request

    name = db.stem
    if http is None:
        from httptrack.cli._ui import make_datasette

        ds = make_datasette(db)

        def fetch(path: str) -> str:
            response = asyncio.run(ds.client.get(path))
            assert response.status_code == 200, (path, response.status_code)
            return str(response.text)

    else:

        def fetch(path: str) -> str:
            with urllib.request.urlopen(http + path, timeout=60) as response:
                assert response.status == 200, (path, response.status)
                return str(response.read().decode())

    def page(path: str) -> Callable[[], Any]:
        return lambda: fetch(path)

    first = json.loads(fetch(f"/{name}/calls.json?_nofacet=1&_nocount=1"))
    next_token = urllib.parse.quote(str(first["next"]))
    day = _recent_day(db)
    return [
        ("calls list, first page (with facets)", page(f"/{name}/calls")),
        ("calls list, page 2 (_next)", page(f"/{name}/calls?_next={next_token}")),
        ("sorted by cost (a column click)", page(f"/{name}/calls?_sort_desc=cost_usd")),
        ("sorted by latency", page(f"/{name}/calls?_sort_desc=latency_ms")),
        (
            f"filtered: provider=openai & user={BUSIEST_USER}",
            page(f"/{name}/calls?provider=openai&user={BUSIEST_USER}"),
        ),
        ("search a common word (_search=refund)", page(f"/{name}/calls?_search=refund")),
        ('search a phrase ("refund policy")', page(f"/{name}/calls?_search=%22refund+policy%22")),
        ("slowest_calls view", page(f"/{name}/slowest_calls")),
        (f"canned cost_for_user ({BUSIEST_USER})", page(f"/{name}/cost_for_user?user={BUSIEST_USER}")),
        ("dashboard, 90 days", page("/-/httptrack?days=90")),
        ("httptrack stats --by user", _cli(db, "stats", "--by", "user")),
        ("httptrack calls -q refund", _cli(db, "calls", "-q", "refund")),
        (
            "httptrack export one day",
            _cli(db, "export", "--since", day, "--until", _next_day(day), "-o", os.devnull),
        ),
        ("(SQLite reading the same day's calls)", lambda: _read_day(db, day)),
    ]


def _read_day(db: Path, day: str) -> None:
    """What ``export`` is compared with: SQLite reading the day's calls, every column, the
    bodies decompressed (Python's sqlite3, in this process: no start-up)."""
    from httptrack.log._bodies import register_functions

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    register_functions(conn)
    try:
        columns = ", ".join(
            f"httptrack_body({c})" if c in ("request_body", "response_body") else f'"{c}"'
            for c in COLUMN_NAMES
        )
        cursor = conn.execute(
            f"SELECT {columns} FROM calls WHERE started_at >= ? AND started_at < ? ORDER BY started_at, id",
            [day, _next_day(day)],
        )
        while cursor.fetchmany(1000):
            pass
    finally:
        conn.close()


def _next_day(day: str) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def _day_rows(db: Path) -> int:
    day = _recent_day(db)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (n,) = conn.execute(
            "SELECT count(*) FROM calls WHERE started_at >= ? AND started_at < ?", [day, _next_day(day)]
        ).fetchone()
    finally:
        conn.close()
    return int(n)


def _cpu() -> float:
    """CPU seconds of this process (all its threads: datasette's) and of its finished children
    (the CLI's runs): steady on a shared machine, where wall-clock times vary with the load."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


#: One row of the table: (case, median seconds or None for a failure/timeout, note, median CPU seconds).
IssueRow = tuple[str, float | None, str, float | None]


def bench_issue_table(db: Path, repeat: int, http: str | None = None) -> list[IssueRow]:
    """Each row of the table. The CPU is of this process and the CLI's (not of a server over HTTP)."""
    results: list[IssueRow] = []
    day_rows = _day_rows(db)
    for name, fn in issue_cases(db, http):
        try:
            fn()  # warm: the OS page cache, as on any machine that used the log before
            times, cpus = [], []
            for _ in range(repeat):
                t0, c0 = time.perf_counter(), _cpu()
                fn()
                times.append(time.perf_counter() - t0)
                cpus.append(_cpu() - c0)
        except Exception as exc:  # a timeout (datasette's 500 "interrupted") or an error
            results.append((name, None, f"failed: {type(exc).__name__}", None))
            print(f"  {name:<46} failed: {exc!r:.200}", file=sys.stderr)
            continue
        median = statistics.median(times)
        cpu = None if http and not name.startswith(("httptrack ", "(SQLite")) else statistics.median(cpus)
        rate = name.startswith(("httptrack export", "(SQLite"))
        note = f"{day_rows / median:,.0f} rows/s" if rate else ""
        results.append((name, median, note, cpu))
        print(f"  {name:<46} {median * 1000:8.0f} ms {note}", file=sys.stderr)
    return results


def print_issue_table(rows: int, db: Path, results: list[IssueRow], how: str) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\nIssue 23's table: {rows:,} calls, {db.stat().st_size / 1e6:,.0f} MB, {how}, median of runs "
        f"(load average {load:.1f} on {os.cpu_count()} CPUs: CPU times hold under load, wall times do not)\n"
    )
    print(f"| {'page or command':<46} | {'median':>13} | {'CPU':>8} | {'< 1 s':>5} |")
    print("|" + "-" * 48 + "|" + "-" * 14 + ":|" + "-" * 9 + ":|" + "-" * 6 + ":|")
    for name, median, note, cpu in results:
        shown = "failed" if median is None else f"{median * 1000:,.0f} ms"
        verdict = "NO" if median is None or median >= 1 else "yes"
        if note and median is not None:  # export: a rate, not a time
            shown, verdict = note, "-"
        cpu_shown = "-" if cpu is None else f"{cpu * 1000:,.0f} ms"
        print(f"| {name:<46} | {shown:>13} | {cpu_shown:>8} | {verdict:>5} |")


def print_writer_growth(db: Path, results: list[tuple[str, float, int]], readers: int) -> None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (calls,) = conn.execute("SELECT max(rowid) FROM calls").fetchone()
    finally:
        conn.close()
    (_, empty, _), (_, big, _) = results
    print(f"\nWriter CPU per row (Store.write, batches of 100, derived data included), {readers} readers\n")
    print("| log | CPU per row | vs empty | largest WAL |")
    print("|---|---:|---:|---:|")
    for name, per_row, wal in results:
        label = "new (empty)" if name == "empty" else f"{db.name} (~{calls:,} calls)"
        print(f"| {label} | {per_row:.0f} us | {per_row / empty:.2f}x | {wal / 1e6:.1f} MB |")
    print(f"\nratio {big / empty:.2f}x")


def serve_ui(db: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``httptrack ui`` on a free port of this machine, and its base URL, once it answers."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = shutil.which("httptrack")
    command = [exe] if exe else [sys.executable, "-m", "httptrack.cli"]
    server = subprocess.Popen(
        [*command, "ui", "--db", str(db), "--port", str(port), "--no-browser"],
        cwd=CODE,
        env={**os.environ, "PYTHONPATH": str(CODE)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(url + "/-/versions.json", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("httptrack ui did not start")


def as_schema_3(db: Path, copy: Path) -> None:
    """``copy``: ``db`` as schema 3 left it (without m004's indexes, with the one it drops)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    src, dst = sqlite3.connect(f"file:{db}?mode=ro", uri=True), sqlite3.connect(copy, isolation_level=None)
    try:
        src.backup(dst)
        dst.execute("BEGIN")
        for name in ("idx_calls_cost", "idx_calls_latency_ms", "idx_calls_tokens"):
            dst.execute(f"DROP INDEX IF EXISTS {name}")
        dst.execute("CREATE INDEX IF NOT EXISTS idx_calls_latency ON calls (cached, latency_ms)")
        # (and the two m006 drops, which schema 3 had)
        dst.execute("CREATE INDEX IF NOT EXISTS idx_calls_started_at ON calls (started_at)")
        dst.execute("CREATE INDEX IF NOT EXISTS idx_calls_day ON calls (date(started_at))")
        dst.execute(
            "DELETE FROM _sqlite_migrations WHERE name IN ('m004_read_indexes', 'm006_fewer_write_indexes')"
        )
        dst.execute("PRAGMA user_version = 3")
        dst.execute("COMMIT")
        dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        src.close()
        dst.close()


def _calls_during_an_index_build(db: Path) -> list[tuple[str, float]]:
    """An app's calls to a big log of schema 3 through TrackingTransport: the first one's
    flush (the migration), one made while the idle writer builds the indexes (its flush:
    how long the build made it wait), and how long until the indexes were built."""
    import httpx2

    import httptrack
    from httptrack.log._indexes import pending
    from httptrack.record import _writer

    answer = json.dumps(
        {
            "id": "chatcmpl-x",
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    ).encode()
    transport = httptrack.TrackingTransport(
        httpx2.MockTransport(lambda request: httpx2.Response(200, content=answer)), db=db, cache=False
    )

    client = httpx2.Client(transport=transport)  # (closing it would flush)
    url = "https://api.openai.com/v1/chat/completions"

    def call_and_flush() -> float:
        t0 = time.perf_counter()
        client.post(url, json={"model": "gpt-4o-mini", "messages": []})
        assert httptrack.flush(600)
        return time.perf_counter() - t0

    def left() -> int:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return len(pending(conn))
        finally:
            conn.close()

    first = call_and_flush()
    time.sleep(_writer.INDEX_IDLE + 1)  # the idle writer has been building for a second
    during = call_and_flush()
    assert left(), "all built meanwhile: the log is too small to see a call wait for it"
    t0 = time.perf_counter()
    while left():
        time.sleep(0.5)
    built = time.perf_counter() - t0
    client.close()
    _writer.writer().close_connections()
    return [
        ("an app's first call, flushed (the migration)", first),
        ("a call while the idle writer builds, flushed", during),
        ("then, until the indexes are built (the writer idle)", built),
    ]


def bench_upgrade(db: Path) -> None:
    """The first write of a writer of this checkout to a big log of schema 3 (a copy of
    ``db``): how long its calls wait (the migration holds the write lock meanwhile), then
    what building the indexes the migration left for the writer's idle time takes."""
    from httptrack.log._sqlite import Store

    copy = db.with_name(f"{db.stem}-schema3.db")
    print(f"Copying {db} as schema 3 left it ...", file=sys.stderr)
    as_schema_3(db, copy)
    batch = list(_rows(100, seed=99))
    t0 = time.perf_counter()
    store = Store(copy)
    store.write(batch)
    first_write = time.perf_counter() - t0
    store.close()
    try:
        from httptrack.log._indexes import build_pending, pending
    except ImportError:  # a checkout before them (HTTPTRACK_BENCH_CODE): all built in the migration
        steps, later = 0, 0.0
    else:
        conn = connect(copy)
        try:
            steps = len(pending(conn))
            t0 = time.perf_counter()
            build_pending(conn)
            later = time.perf_counter() - t0
        finally:
            conn.close()
        if steps:  # again, as an app sees it: calls while the idle writer builds the indexes
            as_schema_3(db, copy)
            waits = _calls_during_an_index_build(copy)
    print(
        f"\nUpgrading {db.name} ({db.stat().st_size / 1e6:,.0f} MB) from schema 3 ({CODE.name}):\n\n"
        f"| {'step':<58} | {'seconds':>8} |\n|{'-' * 60}|{'-' * 9}:|\n"
        f"| {'first write (100 calls), the migration included':<58} | {first_write:8.1f} |\n"
        f"| {f'indexes left for an idle writer ({steps} steps)':<58} | {later:8.1f} |"
    )
    if steps:
        for what, seconds in waits:
            print(f"| {what:<58} | {seconds:8.1f} |")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(f"{copy}-spool", ignore_errors=True)  # the app's (empty) spool folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None, help="where the generated database goes")
    parser.add_argument("--fresh", action="store_true", help="generate again even if the database exists")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--writer", action="store_true", help="also measure what indexing costs the writer")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 2,000 calls in a scratch database, each query once"
    )
    parser.add_argument("--more", action="store_true", help="also every other query (CLI, API, datasette)")
    parser.add_argument("--http", action="store_true", help="issue 23's table over HTTP from `httptrack ui`")
    parser.add_argument(
        "--written",
        action="store_true",
        help="write the calls through TrackingTransport and the background writer (benchmarks/_written.py), "
        "not a bulk load; resumes a database that has fewer calls",
    )
    parser.add_argument("--procs", type=int, default=2, help="with --written: processes making calls at once")
    parser.add_argument(
        "--upgrade",
        action="store_true",
        help="how long the writer's first write waits while it upgrades a copy of the database, "
        "made as schema 3 left it (m004's indexes), and what building the indexes left for later takes",
    )
    parser.add_argument(
        "--writer-growth",
        type=int,
        metavar="ROWS",
        help="only: the writer's CPU per row writing ROWS calls into a new log and into --db "
        "(which keeps them), one run",
    )
    parser.add_argument(
        "--readers", type=int, default=0, help="with --writer-growth: reader processes holding snapshots"
    )
    args = parser.parse_args(argv)
    if args.quick:
        import tempfile

        scratch = tempfile.TemporaryDirectory(prefix="httptrack-bench-log-")
        args.rows, args.repeat, args.fresh, args.writer, args.more = 2_000, 1, True, True, True
        args.db = Path(scratch.name) / "log.db"
    db = args.db or ROOT / "benchmarks" / ".data" / f"log-{args.rows}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    if args.writer_growth:
        print_writer_growth(
            db, bench_writer_growth(db, args.writer_growth, readers=args.readers), args.readers
        )
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _written import count_calls, write_through_transport

    # A written log that stopped short is resumed (without --fresh).
    resume = args.written and not args.fresh and db.exists() and count_calls(db) < args.rows
    if args.fresh or resume or not db.exists():
        print(f"Generating {args.rows:,} calls into {db} ...", file=sys.stderr)
        if args.written:
            if not resume:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
            seconds = write_through_transport(db, args.rows, args.procs, CODE)
        else:
            seconds = generate(db, args.rows)
        print(f"  {seconds:.0f} s, {db.stat().st_size / 1e6:,.0f} MB", file=sys.stderr)
    elif args.upgrade:
        bench_upgrade(db)
        return
    server = None
    try:
        if args.http:
            server, url = serve_ui(db)
            how = f"over HTTP from `httptrack ui` ({CODE.name})"
            table = bench_issue_table(db, args.repeat, url)
        else:
            how = f"datasette's test client ({CODE.name})"
            table = bench_issue_table(db, args.repeat)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    print_issue_table(args.rows, db, table, how)
    if not args.more:
        return
    results = bench_queries(db, args.repeat, warm=not args.quick)
    print(
        f"\nCall log: {args.rows:,} calls, {db.stat().st_size / 1e6:,.0f} MB, {os.cpu_count()} CPUs, "
        f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}\n"
    )
    print(f"| {'query':<46} | {'best':>8} | {'median':>8} | {'< 1 s':>5} |")
    print("|" + "-" * 48 + "|" + "-" * 10 + ":|" + "-" * 10 + ":|" + "-" * 6 + ":|")
    for name, best, median in results:
        verdict = "yes" if median < 1 else "NO"
        print(f"| {name:<46} | {best * 1000:6.0f} ms | {median * 1000:6.0f} ms | {verdict:>5} |")
    if args.writer:
        print("\nBackground writer, per call: build the row (parse, price), write it; with and without")
        print("the search index and daily rollup updates (made once per batch, in its transaction):\n")
        print(f"| {'case':<24} | {'without':>10} | {'with':>10} | {'extra':>7} |")
        print("|" + "-" * 26 + "|" + "-" * 11 + ":|" + "-" * 11 + ":|" + "-" * 8 + ":|")
        for name, without, with_ in bench_writer(200 if args.quick else 1500):
            extra = (with_ / without - 1) * 100
            print(f"| {name:<24} | {without * 1e6:7.0f} us | {with_ * 1e6:7.0f} us | {extra:+5.0f}% |")


if __name__ == "__main__":
    main()
