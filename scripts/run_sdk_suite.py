"""Run an SDK's own test suite plain and under ``HTTPTRACK=1``, and compare test by test.

The strongest check that httptrack changes nothing an SDK relies on is the SDK's own test
suite. This runs one suite three times:

1. ``plain``: without httptrack;
2. ``off``: ``HTTPTRACK=1 HTTPTRACK_CACHE=off`` (every client tracked, no response cache);
3. ``default``: ``HTTPTRACK=1`` with the default cache (a fresh cache folder),

each with ``--junitxml``, and prints per run how many tests passed, failed, errored and were
skipped, then every test whose outcome differs between the runs. ``--recheck N`` then runs
each differing test alone, N times in every mode, to tell a difference httptrack makes
(the same outcome every time) from a flaky test (timing-sensitive tests on a busy machine).
Exit status 0 when no test differs, 1 when some do, 2 for a usage error.

The suite is not part of httptrack: fetch the SDK's source (its repository at the tag of the
installed version, or its sdist, which for the Stainless-generated SDKs includes tests/),
make a virtual environment with the SDK, its test requirements and httptrack installed
(``pip install -e /path/to/httptrack``: the ``HTTPTRACK=1`` hook must be in that
environment), and point this script at both::

    python scripts/run_sdk_suite.py --sdk openai --src ~/sdk-src/openai-3.57.0 \\
        --python ~/sdk-venv/openai/bin/python

``--sdk`` picks the defaults below (pytest arguments, and ``HTTPTRACK_HOSTS`` mapping the
suite's mock server to the provider, so that its requests are tracked at all); anything
after ``--`` replaces the pytest arguments. Each run gets its own call log and cache folder
under ``--out``. Not run in CI (it needs the fetched suites); kept here for anyone to rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

#: Per SDK: pytest arguments and the HTTPTRACK_HOSTS that make the suite's requests tracked.
#: The Stainless SDKs' api_resources/ tests need the vendor's mock server (a Prism or
#: Steady server over the OpenAPI spec, fetched from the network): left out by default.
PRESETS: dict[str, dict[str, object]] = {
    "openai": {"args": ["tests", "--ignore=tests/api_resources"], "hosts": "127.0.0.1:4010=openai"},
    "anthropic": {"args": ["tests", "--ignore=tests/api_resources"], "hosts": "127.0.0.1:4010=anthropic"},
    "groq": {"args": ["tests", "--ignore=tests/api_resources"], "hosts": "127.0.0.1:4010=groq"},
    # ollama's tests answer from pytest-httpserver on a free port: on Ollama's own port its
    # requests are Ollama's (nothing else may listen on 11434 meanwhile).
    "ollama": {
        "args": ["tests", "-p", "no:doctest", "-o", "addopts="],
        "hosts": "",
        "env": {"PYTEST_HTTPSERVER_PORT": "11434"},
    },
    "mistralai": {"args": ["src/mistralai/extra/tests"], "hosts": ""},
}
RUNS = {
    "plain": {},
    "off": {"HTTPTRACK": "1", "HTTPTRACK_CACHE": "off"},
    "default": {"HTTPTRACK": "1"},
}


def parse_junit(path: Path) -> dict[str, str]:
    """``test id -> outcome`` (``passed``, ``failed``, ``error``, ``skipped``); a test with
    several entries (a failure in the call and an error in teardown) keeps the worst."""
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
    outcomes: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
        if rank[outcome] >= rank[outcomes.get(test, "passed")]:
            outcomes[test] = outcome
    return outcomes


def run_once(
    name: str,
    python: str,
    src: Path,
    args: list[str],
    out: Path,
    hosts: str,
    timeout: float,
    extra_env: dict[str, str],
    folder_name: str | None = None,
) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPTRACK")}
    env.update(RUNS[name])
    env.update(extra_env)
    folder = out / (folder_name or name)
    folder.mkdir(parents=True, exist_ok=True)
    if name != "plain":
        env["HTTPTRACK_DB"] = str(folder / "calls.db")
        env["HTTPTRACK_CACHE_DIR"] = str(folder / "cache")
        if hosts:
            env["HTTPTRACK_HOSTS"] = hosts
    junit = folder / "junit.xml"
    command = [python, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}", "-q", *args]
    started = time.monotonic()
    with open(folder / "output.txt", "wb") as log:
        try:
            subprocess.run(command, cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"{name}: timed out after {timeout:.0f} s (see {folder / 'output.txt'})", file=sys.stderr)
    print(f"{folder.name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return junit


def node_id(src: Path, test: str) -> str:
    """A junit ``classname::name`` as a pytest node id (``tests/x.py::Class::name``)."""
    classname, _, name = test.partition("::")
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        path = Path(*parts[:cut]).with_suffix(".py")
        if (src / path).is_file():
            return "::".join([path.as_posix(), *parts[cut:], name])
    return test


def recheck(
    tests: list[str],
    times: int,
    python: str,
    src: Path,
    out: Path,
    hosts: str,
    timeout: float,
    env: dict[str, str],
) -> dict[str, dict[str, list[str]]]:
    """Each test alone (no xdist), ``times`` times per mode: ``test -> mode -> outcomes``."""
    found: dict[str, dict[str, list[str]]] = {test: {} for test in tests}
    has_xdist = subprocess.run([python, "-c", "import xdist"], capture_output=True).returncode == 0
    alone = ["-n", "0"] if has_xdist else []
    for test in tests:
        node = node_id(src, test)
        for name in RUNS:
            for _ in range(times):
                folder = out / "recheck" / f"{len(found[test].get(name, []))}-{name}"
                junit = run_once(
                    name,
                    python,
                    src,
                    [node, *alone],
                    folder.parent,
                    hosts,
                    timeout,
                    env,
                    folder.name,
                )
                outcome = parse_junit(junit).get(test, "missing") if junit.exists() else "missing"
                found[test].setdefault(name, []).append(outcome)
    return found


def summarize(results: dict[str, dict[str, str]]) -> tuple[list[str], dict[str, object]]:
    lines = []
    counts: dict[str, dict[str, int]] = {}
    for name, outcomes in results.items():
        tally = {k: 0 for k in ("passed", "failed", "error", "skipped")}
        for outcome in outcomes.values():
            tally[outcome] += 1
        counts[name] = tally
        lines.append(f"{name:8} " + "  ".join(f"{k} {v}" for k, v in tally.items()))
    tests = sorted(set().union(*(set(o) for o in results.values())))
    differing = {
        test: {name: outcomes.get(test, "missing") for name, outcomes in results.items()}
        for test in tests
        if len({outcomes.get(test, "missing") for outcomes in results.values()}) > 1
    }
    lines.append(f"differing {len(differing)}")
    for test, by_run in differing.items():
        lines.append(f"  {test}: " + ", ".join(f"{k}={v}" for k, v in by_run.items()))
    return lines, {"counts": counts, "differing": differing}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pytest_args: list[str] | None = None
    if "--" in argv:
        at = argv.index("--")
        argv, pytest_args = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        description="Run one SDK's test suite plain, with HTTPTRACK=1 HTTPTRACK_CACHE=off and with "
        "HTTPTRACK=1 (default cache), and compare the outcomes test by test (junitxml). "
        "Arguments after -- replace the preset's pytest arguments.",
    )
    parser.add_argument("--sdk", choices=sorted(PRESETS), help="preset: pytest arguments and HTTPTRACK_HOSTS")
    parser.add_argument("--src", type=Path, required=True, help="the SDK's source folder (holding its tests)")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the Python of a venv with the SDK, its test deps and httptrack",
    )
    parser.add_argument("--hosts", help="HTTPTRACK_HOSTS for the tracked runs (default: the preset's)")
    parser.add_argument("--runs", default="plain,off,default", help="which runs, comma separated")
    parser.add_argument(
        "--out", type=Path, help="folder for junit files, logs, call logs (default: a new one)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run (default 3600)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument(
        "--recheck-from",
        type=Path,
        metavar="JSON",
        help="no runs: recheck the differences of a comparison.json",
    )
    parser.add_argument(
        "--recheck", type=int, default=0, metavar="N", help="run each differing test alone N times per mode"
    )
    options = parser.parse_args(argv)
    preset = PRESETS.get(options.sdk or "", {"args": ["tests"], "hosts": ""})
    args = pytest_args if pytest_args is not None else list(preset["args"])  # type: ignore[call-overload]
    hosts = options.hosts if options.hosts is not None else str(preset["hosts"])
    extra_env: dict[str, str] = dict(preset.get("env", {}))  # type: ignore[call-overload]
    runs = [r.strip() for r in options.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown or not options.src.is_dir():
        parser.error(f"unknown run {unknown[0]!r}" if unknown else f"no such folder: {options.src}")
    out = (
        options.out
        or Path.cwd() / f"sdk-suite-{options.sdk or options.src.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    results: dict[str, dict[str, str]] = {}
    for name in runs if options.recheck_from is None else []:
        junit = run_once(
            name, options.python, options.src.resolve(), args, out, hosts, options.timeout, extra_env
        )
        results[name] = parse_junit(junit) if junit.exists() else {}
    if options.recheck_from is not None:  # the runs were made before: recheck their differences
        report: dict[str, object] = json.loads(options.recheck_from.read_text())
        lines = [f"differing {len(report['differing'])} (from {options.recheck_from})"]  # type: ignore[arg-type]
    else:
        lines, report = summarize(results)
    differing = list(report["differing"])  # type: ignore[call-overload]
    if options.recheck and differing:
        found = recheck(
            differing,
            options.recheck,
            options.python,
            options.src.resolve(),
            out,
            hosts,
            options.timeout,
            extra_env,
        )
        report["recheck"] = found
        lines.append(f"rechecked alone, {options.recheck} times per mode:")
        for test, by_mode in found.items():
            lines.append(f"  {test}: " + ", ".join(f"{m}={'/'.join(o)}" for m, o in by_mode.items()))
    (out / "comparison.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2) if options.json else "\n".join(lines))
    return 1 if report["differing"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
