"""Two httptrack checkouts side by side: what a tracked call costs the app's thread.

    python benchmarks/ab_app_thread.py main=/path/to/old/checkout new=.
    python benchmarks/ab_app_thread.py --rounds 20 --calls 300 main=... new=...

Each ``name=path`` is a long-lived worker process importing httptrack from ``path``
(``PYTHONPATH``), making ``openai`` chat completions over ``httpx2.MockTransport``: bare (the
SDK alone) and tracked with the cache off, in rounds shuffled across workers and variants
(so load on a shared machine falls on all alike). Per round: the app thread's CPU per call
(``time.thread_time``), and the whole process's (``time.process_time``, the writer thread
included, ``flush()`` inside the timed span), then the median of the per-round differences
and ratios against the same worker's bare rounds. Also, from ``/proc``: the app thread's
voluntary context switches per call over bare's (each one a wait: for the GIL the writer
thread took while the app's thread was in a system call, say) and its minor page faults.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _task_stat() -> tuple[int, int]:
    """The calling thread's voluntary context switches and minor page faults so far."""
    tid = threading.get_native_id()
    switches = 0
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            switches = int(line.split()[1])
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return switches, int(fields[7])


def worker() -> None:
    sys.path.insert(0, str(HERE))
    import httpx2
    import openai
    from _payloads import OPENAI_CHAT_COMPLETION

    import httptrack

    folder = tempfile.mkdtemp()
    headers = {"content-type": "application/json", "x-request-id": "req_bench"}

    def handler(request: Any) -> Any:
        return httpx2.Response(200, headers=headers, stream=httpx2.ByteStream(OPENAI_CHAT_COMPLETION))

    inner = httpx2.MockTransport(handler)

    def sdk(transport: Any) -> Any:
        return openai.OpenAI(
            api_key="sk-bench", max_retries=0, http_client=httpx2.Client(transport=transport)
        )

    tracked = httptrack.TrackingTransport(inner, db=f"{folder}/calls.db", cache=False)
    clients = {"bare": sdk(inner), "off": sdk(tracked)}
    count = 0

    def call(client: Any) -> None:
        nonlocal count
        count += 1
        content = f"What is the capital of France? (question {count})"
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": content}])

    for _ in range(300):
        call(clients["bare"])
        call(clients["off"])
    httptrack.flush()
    print("ready", flush=True)
    for line in sys.stdin:
        variant, calls = line.split()
        n = int(calls)
        client = clients[variant]
        gc.collect()
        stat0 = _task_stat()
        app0, proc0 = time.thread_time(), time.process_time()
        for _ in range(n):
            call(client)
        app1 = time.thread_time()
        stat1 = _task_stat()
        httptrack.flush()
        proc1 = time.process_time()
        figures = {
            "app": (app1 - app0) / n * 1e6,
            "process": (proc1 - proc0) / n * 1e6,
            "switches": (stat1[0] - stat0[0]) / n,
            "faults": (stat1[1] - stat0[1]) / n,
        }
        print(json.dumps(figures), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=300, help="calls per variant per round")
    parser.add_argument("checkouts", nargs="+", metavar="name=path")
    args = parser.parse_args()
    workers: dict[str, subprocess.Popen[str]] = {}
    for spec in args.checkouts:
        name, _, path = spec.partition("=")
        env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
        env = {k: v for k, v in env.items() if not k.startswith("HTTPTRACK")}
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", f"{name}: the worker did not start"
        workers[name] = proc
    variants = ("bare", "off")
    results: dict[tuple[str, str], list[dict[str, float]]] = {(w, v): [] for w in workers for v in variants}
    for _ in range(args.rounds):
        jobs = [(w, v) for w in workers for v in variants]
        random.shuffle(jobs)
        for name, variant in jobs:
            proc = workers[name]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{variant} {args.calls}\n")
            proc.stdin.flush()
            results[name, variant].append(json.loads(proc.stdout.readline()))
    for proc in workers.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)
    print(f"openai chat over httpx2.MockTransport, cache off; {args.rounds} rounds of {args.calls} calls")
    print(f"{'':10} {'bare app':>9} {'off app':>8} {'app +':>6} {'process':>8} {'switches':>9} {'faults':>7}")
    for name in workers:
        bare, off = results[name, "bare"], results[name, "off"]

        def median(rows: list[dict[str, float]], key: str) -> float:
            return statistics.median(row[key] for row in rows)

        extra = statistics.median(o["app"] - b["app"] for o, b in zip(off, bare, strict=True))
        ratio = statistics.median(o["process"] / b["process"] for o, b in zip(off, bare, strict=True))
        print(
            f"{name:10} {median(bare, 'app'):9.0f} {median(off, 'app'):8.0f} {extra:+6.0f} {ratio:7.3f}x"
            f" {median(off, 'switches') - median(bare, 'switches'):+9.2f} {median(off, 'faults'):7.2f}"
        )
    print("(µs per call; app +: the median of per-round differences; process: tracked / bare CPU;")
    print(" switches: the app thread's voluntary context switches per call over bare's; faults: per call)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        sys.exit(main())
