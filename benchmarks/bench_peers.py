"""httptrack side by side with other LLM tracers: whole-process CPU per call against the bare call.

    python benchmarks/bench_peers.py            # ~5-10 minutes (memory runs included)
    python benchmarks/bench_peers.py --quick    # a smoke run (seconds; CI)
    python benchmarks/bench_peers.py --no-memory --rounds 10
    python benchmarks/bench_peers.py --only off,defaults,hit --baseline ../main   # before/after

Each variant runs in its own long-lived worker process (so one tool's threads, patches and
garbage never touch another's), driven round-robin from here: 25 rounds, the order shuffled
every round, each round a batch of calls per variant and scenario with the tool's own flush
inside the timed span (httptrack's writer, an OpenTelemetry batch processor, Langfuse's
exporter), so background work is counted. The figure is the worker's whole-process CPU
time per call (``time.process_time``: every thread), divided by the bare worker's in the
same round; the median of those ratios is the headline. Wall time is printed beside it but
swings by a third on a shared machine; CPU by about 1%.

Every call goes through the ``openai`` SDK (over ``httpx2``) to an in-memory transport
(``httpx2.MockTransport``, no sockets): a chat completion, and a chat stream of 20 chunks
read to its end. Variants:

- **bare**: the SDK alone.
- **httptrack, cache off** / **defaults** (the cache on, every call a new prompt: a miss,
  looked up, then stored) / **cache hit** (the same prompt every call).
- **OpenLLMetry**: ``opentelemetry-instrumentation-openai`` with the SDK's
  ``BatchSpanProcessor`` and the OTLP/HTTP exporter.
- **Langfuse**: its OpenAI integration (``langfuse.openai``).
- **LiteLLM**: ``litellm.completion`` with the same OpenAI client and a no-op callback.

The peers are an optional extra (``pip install -e '.[bench-peers]'``, better in a venv of
its own: they pin many packages); one that is not installed prints "not installed". Peers
that export (OpenLLMetry, Langfuse) send to a loopback HTTP sink run by this driver
process (its CPU is not counted), so their serialization and export are measured too.

Also: a raw ``httpx2`` ``client.post`` loop, bare against tracked with every row written
(calls per CPU-second and per wall-second), and memory: RSS growth of a fresh process over
20,000 calls per variant (``--memory-calls``), all rows written.
"""

from __future__ import annotations

import argparse
import gc
import http.server
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

VARIANTS = {
    "bare": "bare (openai SDK alone)",
    "off": "httptrack, cache off",
    "defaults": "httptrack, defaults (cache on, every call a miss)",
    "hit": "httptrack, cache hit",
    "process": "httptrack, writer process (HTTPTRACK_WRITER=process), cache off",
    "openllmetry": "OpenLLMetry (opentelemetry-instrumentation-openai)",
    "langfuse": "Langfuse OpenAI integration",
    "litellm": "LiteLLM + a no-op callback",
}
PEERS = {
    "openllmetry": ("opentelemetry.instrumentation.openai", "opentelemetry-instrumentation-openai"),
    "langfuse": ("langfuse.openai", "langfuse"),
    "litellm": ("litellm", "litellm"),
}
SCENARIOS = ("chat", "stream", "raw")
#: Which variants run the raw httpx2 loop (the peers patch the SDK, not httpx2).
RAW_VARIANTS = ("bare", "off", "defaults", "process")
#: Variants of httptrack (the others are peers, or bare).
TRACKED = ("off", "defaults", "hit", "process")
STREAM_CHUNKS = 20


# -- the worker -----------------------------------------------------------------------------


class _Worker:
    """One variant in one process: builds its client, runs batches of calls on request."""

    def __init__(self, variant: str, folder: Path, sink: str) -> None:
        # (httptrack comes from PYTHONPATH: this checkout's, or --baseline's)
        sys.path.insert(0, str(HERE))
        self.variant = variant.split("@")[0]
        self.folder = folder
        self.sink = sink
        self.counter = itertools.count()
        self.flushes: list[Callable[[], Any]] = []
        self.sdk_call: Callable[[dict[str, Any]], Any] | None = None
        self._raw: Callable[[], Any] | None = None

    # The in-memory provider.
    def transport(self) -> Any:
        import httpx2
        from _payloads import OPENAI_CHAT_COMPLETION, openai_chat_stream

        chunks = openai_chat_stream([f" word{i}" for i in range(STREAM_CHUNKS - 4)])
        headers = {"content-type": "application/json", "x-request-id": "req_bench"}

        class Chunks(httpx2.SyncByteStream):  # type: ignore[misc]
            def __iter__(self) -> Iterator[bytes]:
                yield from chunks

        def handler(request: Any) -> Any:
            if b'"stream":true' in request.content or b'"stream": true' in request.content:
                return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks())
            return httpx2.Response(200, headers=headers, stream=httpx2.ByteStream(OPENAI_CHAT_COMPLETION))

        transport = httpx2.MockTransport(handler)
        if self.variant in TRACKED:
            import httptrack

            options: dict[str, Any] = {"db": self.folder / f"{self.variant}.db"}
            if self.variant in ("off", "process"):
                options["cache"] = False
                if self.variant == "process":
                    options["writer"] = "process"
            else:
                options["cache_dir"] = self.folder / f"{self.variant}-cache"
            if self.variant == "hit":  # the same request answered again and again, on purpose:
                os.environ["HTTPTRACK_CACHE_MAX_HITS"] = "0"  # not a loop to break (cache/_guard)
            transport = httptrack.TrackingTransport(transport, **options)
            if not self.flushes:
                self.flushes.append(httptrack.flush)
        return transport

    def setup_sdk(self) -> None:
        import httpx2

        http_client = httpx2.Client(transport=self.transport())
        options = {"api_key": "sk-bench", "max_retries": 0, "http_client": http_client}
        if self.variant == "langfuse":
            os.environ.update(
                LANGFUSE_PUBLIC_KEY="pk-lf-bench", LANGFUSE_SECRET_KEY="sk-lf-bench", LANGFUSE_HOST=self.sink
            )
            from langfuse import get_client
            from langfuse.openai import OpenAI as LangfuseOpenAI

            sdk: Any = LangfuseOpenAI(**options)
            self.flushes.append(get_client().flush)
        else:
            import openai

            if self.variant == "openllmetry":
                from opentelemetry import trace
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                from opentelemetry.instrumentation.openai import OpenAIInstrumentor
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                provider = TracerProvider()
                provider.add_span_processor(
                    BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{self.sink}/v1/traces"))
                )
                trace.set_tracer_provider(provider)
                OpenAIInstrumentor().instrument()
                self.flushes.append(provider.force_flush)
            sdk = openai.OpenAI(**options)
        if self.variant == "litellm":
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm
            from litellm.integrations.custom_logger import CustomLogger

            class NoOp(CustomLogger):  # type: ignore[misc]
                def log_success_event(
                    self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
                ) -> None:
                    pass

            litellm.telemetry = False
            litellm.callbacks = [NoOp()]

            def call(request: dict[str, Any]) -> Any:
                return litellm.completion(client=sdk, api_key="sk-bench", **request)

            self.sdk_call = call
        else:
            self.sdk_call = lambda request: sdk.chat.completions.create(**request)

    def request(self, stream: bool) -> dict[str, Any]:
        n = 0 if self.variant == "hit" else next(self.counter)
        request: dict[str, Any] = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"What is the capital of France? (question {n})"}],
        }
        if stream:
            request["stream"] = True
            request["stream_options"] = {"include_usage": True}
        return request

    def one(self, scenario: str) -> None:
        if scenario == "raw":
            if self._raw is None:
                import httpx2

                client = httpx2.Client(
                    transport=self.transport(), headers={"authorization": "Bearer sk-bench"}
                )
                url = "https://api.openai.com/v1/chat/completions"

                def raw() -> None:
                    client.post(url, json=self.request(False)).read()

                self._raw = raw
            self._raw()
            return
        if self.sdk_call is None:
            self.setup_sdk()
        assert self.sdk_call is not None
        if scenario == "stream":
            for _ in self.sdk_call(self.request(True)):
                pass
        else:
            self.sdk_call(self.request(False))

    def flush(self) -> None:
        for flush in self.flushes:
            flush()

    def writer_cpu(self) -> float:
        """The CPU time (s) of the writer process so far (``process``: it runs beside this
        one, see record/_daemon; single-threaded): ``se.sum_exec_runtime`` of
        ``/proc/<pid>/sched`` (ns), else utime + stime of ``/proc/<pid>/stat`` (clock ticks,
        10 ms: noisy over a batch); 0 for the others."""
        if self.variant != "process":
            return 0.0
        try:
            pid = int((self.folder / "process.db-spool" / "writer.lock").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        try:
            with open(f"/proc/{pid}/sched") as sched:
                for line in sched:
                    if line.startswith("se.sum_exec_runtime"):
                        return float(line.split(":")[1]) / 1000
        except (OSError, ValueError):
            pass
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def batch(self, scenario: str, calls: int) -> dict[str, float]:
        gc.collect()
        writer = self.writer_cpu()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            self.one(scenario)
        self.flush()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"cpu": cpu, "wall": wall, "writer": max(0.0, self.writer_cpu() - writer)}


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker_main(variant: str, folder: Path, sink: str) -> None:
    worker = _Worker(variant, folder, sink)
    out = sys.stdout
    for line in sys.stdin:
        order = json.loads(line)
        try:
            if order["do"] == "batch":
                answer: dict[str, Any] = worker.batch(order["scenario"], order["calls"])
            elif order["do"] == "memory":
                for _ in range(200):  # warm up: imports, price data, caches that fill once
                    worker.one("chat")
                worker.flush()
                gc.collect()
                before = rss_mib()
                for i in range(order["calls"]):
                    worker.one("chat")
                    if i % 1000 == 999:
                        worker.flush()
                worker.flush()
                gc.collect()
                answer = {"before": before, "after": rss_mib()}
            else:
                answer = {"error": f"unknown order {order!r}"}
        except Exception as exc:  # reported to the driver, which marks the variant failed
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


# -- the driver -----------------------------------------------------------------------------


class _Sink(http.server.BaseHTTPRequestHandler):
    """A loopback collector: accepts whatever the exporters post, answers 200."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET = do_PUT = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_sink() -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def installed(variant: str, python: str) -> bool:
    if variant not in PEERS:
        return True
    module = PEERS[variant][0]
    check = (
        "import importlib.util as u\n"
        "try:\n"
        f"    found = u.find_spec({module!r}) is not None\n"
        "except ModuleNotFoundError:\n"
        "    found = False\n"
        "raise SystemExit(not found)"
    )
    probe = subprocess.run([python, "-c", check], capture_output=True, timeout=60)
    return probe.returncode == 0


class Process:
    def __init__(self, variant: str, folder: Path, sink: str, python: str, root: Path = ROOT) -> None:
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(root), str(HERE)]),
            LITELLM_LOCAL_MODEL_COST_MAP="True",
        )
        env.pop("HTTPTRACK", None)
        self.variant = variant
        self.proc = subprocess.Popen(
            [python, __file__, "--worker", variant, "--folder", str(folder), "--sink", sink],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def ask(self, **order: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(order) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"the worker ended (exit code {self.proc.wait(timeout=30)})"}
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_rounds(
    procs: dict[str, Process], rounds: int, calls: dict[str, int], failed: dict[str, str]
) -> dict[tuple[str, str], list[dict[str, float]]]:
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    jobs = [(v, s) for v in procs for s in SCENARIOS if s != "raw" or v.split("@")[0] in RAW_VARIANTS]
    for job in jobs:  # warm-up batch: imports, price data, the cache folder, the SDK's first call
        variant, scenario = job
        if variant not in failed:
            answer = procs[variant].ask(do="batch", scenario=scenario, calls=max(5, calls[scenario] // 5))
            if "error" in answer:
                failed[variant] = answer["error"]
    rng = random.Random(19)
    for index in range(rounds):
        order = list(jobs)
        rng.shuffle(order)
        for variant, scenario in order:
            if variant in failed:
                continue
            answer = procs[variant].ask(do="batch", scenario=scenario, calls=calls[scenario])
            if "error" in answer:
                failed[variant] = answer["error"]
                continue
            per_call = {key: value / calls[scenario] for key, value in answer.items()}
            samples.setdefault((variant, scenario), []).append(per_call)
        print(f"  round {index + 1}/{rounds}", file=sys.stderr, flush=True)
    return samples


def ratio(
    samples: dict[tuple[str, str], list[dict[str, float]]], variant: str, scenario: str, key: str
) -> float | None:
    """Median over rounds of the variant's figure over bare's in the same round."""
    mine, base = samples.get((variant, scenario)), samples.get(("bare", scenario))
    if not mine or not base:
        return None
    return statistics.median(m[key] / b[key] for m, b in zip(mine, base, strict=False))


def summed_us(
    samples: dict[tuple[str, str], list[dict[str, float]]], variant: str, scenario: str, key: str
) -> float:
    """A figure per call (µs) over every round (the same calls each): their mean."""
    return statistics.fmean(s[key] for s in samples[(variant, scenario)]) * 1e6


def summed_ratio(
    samples: dict[tuple[str, str], list[dict[str, float]]], variant: str, scenario: str
) -> float | None:
    """The variant's CPU with its writer process's, over bare's, each summed over every round."""
    mine, base = samples.get((variant, scenario)), samples.get(("bare", scenario))
    if not mine or not base:
        return None
    return (
        summed_us(samples, variant, scenario, "cpu") + summed_us(samples, variant, scenario, "writer")
    ) / (summed_us(samples, "bare", scenario, "cpu"))


def median_us(
    samples: dict[tuple[str, str], list[dict[str, float]]], variant: str, scenario: str, key: str
) -> float:
    return statistics.median(s[key] for s in samples[(variant, scenario)]) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--calls", type=int, default=100, help="chat calls per batch (streams: half)")
    parser.add_argument("--memory-calls", type=int, default=20_000)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--only", help="comma-separated variants (bare is always run)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the workers")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another httptrack checkout (say, main's) measured beside this one in the same run",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker, Path(args.folder), args.sink)
        return 0
    if args.quick:
        args.rounds, args.calls, args.memory_calls = 3, 10, 300
    calls = {"chat": args.calls, "stream": max(1, args.calls // 2), "raw": args.calls * 2}
    wanted = list(VARIANTS) if not args.only else ["bare", *args.only.split(",")]
    roots = {variant: ROOT for variant in wanted}
    if args.baseline:
        for variant in [v for v in wanted if v in ("off", "defaults", "hit")]:
            wanted.insert(wanted.index(variant) + 1, f"{variant}@baseline")
            roots[f"{variant}@baseline"] = args.baseline.resolve()
            VARIANTS[f"{variant}@baseline"] = f"{VARIANTS[variant]} — baseline"
    sink = start_sink()
    failed: dict[str, str] = {}
    variants = []
    for variant in wanted:
        if installed(variant, args.python):
            variants.append(variant)
        else:
            failed[variant] = f"not installed (pip install {PEERS[variant][1]}, or '.[bench-peers]')"
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; Python {sys.version.split()[0]}; {args.rounds} rounds, "
        f"{calls['chat']} chat calls / {calls['stream']} streams / {calls['raw']} raw calls per batch\n",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="httptrack-peers-") as tmp:
        procs = {}
        for variant in variants:
            folder = Path(tmp) / variant
            folder.mkdir()
            procs[variant] = Process(variant, folder, sink, args.python, roots[variant])
        try:
            samples = run_rounds(procs, args.rounds, calls, failed)
        finally:
            for proc in procs.values():
                proc.close()
        print(
            "Whole-process CPU per call against the bare call (median of per-round ratios; wall in brackets)"
        )
        print()
        print("| variant | chat | stream, 20 chunks |")
        print("|---|---:|---:|")
        for variant in wanted:
            if variant == "bare":
                chat, stream = (median_us(samples, "bare", s, "cpu") for s in ("chat", "stream"))
                print(f"| bare (CPU per call) | {chat:.0f} µs | {stream:.0f} µs |")
                continue
            if variant in failed:
                print(f"| {VARIANTS[variant]} | {failed[variant]} | |")
                continue
            cells = []
            for scenario in ("chat", "stream"):
                cpu, wall = (
                    ratio(samples, variant, scenario, "cpu"),
                    ratio(samples, variant, scenario, "wall"),
                )
                cells.append("n/a" if cpu is None or wall is None else f"{cpu:.2f}x ({wall:.2f}x)")
            print(f"| {VARIANTS[variant]} | {cells[0]} | {cells[1]} |")
            if variant.startswith("process"):
                # Summed over every round (with clock ticks, 10 ms, a batch's is noisy).
                cells = []
                for scenario in ("chat", "stream"):
                    total = summed_ratio(samples, variant, scenario)
                    writer = summed_us(samples, variant, scenario, "writer")
                    cells.append(
                        "n/a" if total is None else f"**{total:.2f}x** (writer {writer:.0f} µs/call)"
                    )
                print(f"| … app + writer process (sum over rounds) | {cells[0]} | {cells[1]} |")
        print("\nRaw httpx2 client.post() loop, every row written: rate against the bare loop\n")
        print("| variant | calls per CPU-second | × bare | calls per wall-second | × bare |")
        print("|---|---:|---:|---:|---:|")
        for variant in wanted:
            if (variant, "raw") not in samples:
                continue
            cpu_rate = 1e6 / median_us(samples, variant, "raw", "cpu")
            wall_rate = 1e6 / median_us(samples, variant, "raw", "wall")
            cpu_x = 1 / (ratio(samples, variant, "raw", "cpu") or 1)
            wall_x = 1 / (ratio(samples, variant, "raw", "wall") or 1)
            label = "bare httpx2" if variant == "bare" else VARIANTS[variant]
            if variant.startswith("process"):
                label += ": app process alone"
            print(f"| {label} | {cpu_rate:,.0f} | {cpu_x:.2f}x | {wall_rate:,.0f} | {wall_x:.2f}x |")
            if variant.startswith("process"):
                total = summed_ratio(samples, variant, "raw")
                per_call = summed_us(samples, variant, "raw", "cpu") + summed_us(
                    samples, variant, "raw", "writer"
                )
                total_x = f"**{1 / total:.2f}x**" if total else "n/a"
                print(f"| … app + writer process (sum over rounds) | {1e6 / per_call:,.0f} | {total_x} | | |")
        if not args.no_memory:
            what = f"{args.memory_calls:,} chat calls (after 200 to warm up)"
            print(f"\nMemory: RSS growth of a fresh process over {what}\n")
            print("| variant | RSS before | after | growth |")
            print("|---|---:|---:|---:|")
            for variant in wanted:
                if variant in failed or variant.startswith("hit"):
                    continue
                folder = Path(tmp) / f"memory-{variant}"
                folder.mkdir()
                proc = Process(variant, folder, sink, args.python, roots[variant])
                try:
                    answer = proc.ask(do="memory", calls=args.memory_calls)
                finally:
                    proc.close()
                if "error" in answer:
                    print(f"| {VARIANTS[variant]} | {answer['error']} | | |")
                else:
                    before, after = answer["before"], answer["after"]
                    growth = f"{after - before:+.1f} MiB"
                    print(f"| {VARIANTS[variant]} | {before:.0f} MiB | {after:.0f} MiB | {growth} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
