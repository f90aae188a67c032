"""What storing answers in the response cache costs the background writer (issue 19: one
copy of a response's bytes), with the defaults: every call a miss, its answer stored.

Each variant runs in its own process: the openai SDK's ``chat.completions.create()`` over an
in-memory provider (``httpx2.MockTransport``), a small (489 B) or a larger (3.2 KB) answer.
Measured on the writer thread's CPU clock (steady on a shared machine, unlike wall time):

- **cache storing**: the writer's time in ``Tracker.after_record`` and ``after_batch`` (the
  cache stages each answer and stores the batch's), per call;
- **writer**: the writer thread's whole CPU per call (building and inserting the row too);
- **folder**: bytes the cache folder holds per entry; **RSS**: the process's growth over
  the run (with ``--memory``: 20,000 calls, issue 19's bound is +30 MiB).

With ``--baseline PATH`` each variant runs again with another checkout's ``httptrack`` (its
folder on ``PYTHONPATH``), interleaved in the same run: before and after.

    python benchmarks/bench_cache_store.py --baseline ../main     # a minute or two
    python benchmarks/bench_cache_store.py --memory --baseline ../main
    python benchmarks/bench_cache_store.py --quick                # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_CHILD = textwrap.dedent(
    """
    import collections, gc, json, os, sys, tempfile, threading, time
    sys.path.insert(0, sys.argv[1])
    import httpx2, openai, httptrack
    from _payloads import OPENAI_CHAT_COMPLETION as BODY

    size, calls = sys.argv[2], int(sys.argv[3])
    if size == "large":
        answer = json.loads(BODY)
        answer["choices"][0]["message"]["content"] = " ".join(
            f"word{i % 97} is a token of the answer," for i in range(80)
        )
        BODY = json.dumps(answer, indent=2).encode()
    folder = tempfile.mkdtemp()

    def handler(request):
        headers = {"content-type": "application/json", "x-request-id": "req_bench"}
        return httpx2.Response(200, headers=headers, stream=httpx2.ByteStream(BODY))

    transport = httptrack.TrackingTransport(
        httpx2.MockTransport(handler), db=f"{folder}/calls.db", cache_dir=f"{folder}/cache"
    )
    sdk = openai.OpenAI(api_key="sk-bench", max_retries=0, http_client=httpx2.Client(transport=transport))
    from httptrack import _tracker

    spent = collections.Counter()
    for name in ("after_record", "after_batch"):
        original = getattr(_tracker.Tracker, name)

        def timed(*args, _original=original, **kwargs):
            start = time.thread_time()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_original.__name__] += time.thread_time() - start

        setattr(_tracker.Tracker, name, timed)

    def call(n):
        question = [{"role": "user", "content": f"What is the capital of France? ({n})"}]
        sdk.chat.completions.create(model="gpt-4o-mini", messages=question)

    def rss():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    for n in range(300):
        call(n)
    httptrack.flush()
    gc.collect()
    writer = next(t for t in threading.enumerate() if t.name == "httptrack-writer")
    clock = time.pthread_getcpuclockid(writer.ident)
    spent.clear()
    rss0, w0, p0 = rss(), time.clock_gettime(clock), time.process_time()
    for n in range(300, 300 + calls):
        call(n)
    httptrack.flush()
    gc.collect()
    w1, p1 = time.clock_gettime(clock), time.process_time()
    import sqlite3

    index = sqlite3.connect(f"{folder}/cache/cache.db")
    index.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the folder as it stays, not its WAL
    index.close()
    disk = 0
    for top, _, files in os.walk(f"{folder}/cache"):
        disk += sum(os.path.getsize(os.path.join(top, name)) for name in files)
    print(json.dumps({
        "store_us": (spent["after_record"] + spent["after_batch"]) / calls * 1e6,
        "record_us": spent["after_record"] / calls * 1e6,
        "batch_us": spent["after_batch"] / calls * 1e6,
        "writer_us": (w1 - w0) / calls * 1e6,
        "process_us": (p1 - p0) / calls * 1e6,
        "folder_bytes": disk / (300 + calls),
        "rss_mib": rss() - rss0,
        "body": len(BODY),
        "code": httptrack.__file__,
    }))
    """
)


def run(root: Path, size: str, calls: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(HERE), size, str(calls)],
        env=env,
        cwd=root,  # ``-c`` puts the working folder first on sys.path: the checkout measured
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if child.returncode != 0:
        raise SystemExit(child.stderr)
    return json.loads(child.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--memory", action="store_true", help="20,000 calls per run, for memory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout, measured in the same run")
    args = parser.parse_args()
    calls = 200 if args.quick else 20_000 if args.memory else 3000
    rounds = 1 if args.quick or args.memory else args.rounds
    roots = {"this checkout": ROOT}
    if args.baseline:
        roots["baseline"] = args.baseline.resolve()
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(rounds):
        for size in ("small", "large"):
            for label, root in roots.items():
                results.setdefault((size, label), []).append(run(root, size, calls))
    print(f"{calls} calls per run, {rounds} round(s); medians\n")
    print(
        "| answer | httptrack | cache storing (writer): after_record + after_batch | writer, all"
        " | process | folder per entry | RSS |"
    )
    print("|---|---|---|---|---|---|---|")
    for (_, label), runs in results.items():
        assert all(Path(r["code"]).is_relative_to(roots[label]) for r in runs), runs
        mid = {name: statistics.median(r[name] for r in runs) for name in runs[0] if name != "code"}
        print(
            f"| {int(mid['body'])} B | {label} | {mid['store_us']:.0f} µs: {mid['record_us']:.0f} + "
            f"{mid['batch_us']:.0f} | {mid['writer_us']:.0f} µs"
            f" | {mid['process_us']:.0f} µs | {mid['folder_bytes']:.0f} B | +{mid['rss_mib']:.1f} MiB |"
        )


if __name__ == "__main__":
    main()
