"""Interpreter start-up with httptrack's ``HTTPTRACK=1`` hook: without httptrack, installed
with the variable off, and installed with it on — side by side, in the same run.

    python benchmarks/bench_startup.py [--runs 40] [--import-runs 15]

Two scratch virtual environments are made from this interpreter's base Python. Both see this
environment's packages (httpx2 ...) through a path-only ``.pth``; one also has this checkout's
httptrack installed as ``pip install`` leaves it: the package, plus ``httptrack.pth`` and
``_httptrack_boot.py`` at the top of site-packages, all byte-compiled. Nothing else of the
current environment's start-up (its other ``.pth`` files) is in either, so the difference is
httptrack alone.

Rows:
- ``python -c pass``: the start-up cost every Python program in the environment pays.
- ``python -c "import httpx2"``: the first import of an HTTP library, when (with the variable
  on) httptrack itself is imported and patches the client classes.

Conditions run interleaved, one of each per round, so drift on a busy machine hits all
alike. Figures are medians per process, spawn included: wall-clock time, and CPU time (user +
system, from ``getrusage``), which a busy machine disturbs less. A last line attributes the
difference with ``python -X importtime``: the hook module's own import at start-up, and
httptrack's (everything it imports that httpx2 did not) at the first ``import httpx2``.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import site
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOOK_PTH = ROOT / "httptrack" / "_boot.pth"
HOOK_MODULE = ROOT / "httptrack" / "_boot.py"
#: `python -c` puts the working directory first on sys.path: run where no httptrack is (not
#: in this checkout, whose uncompiled sources would be imported instead of the installed copy).
NEUTRAL_DIR = tempfile.gettempdir()


def make_env(folder: Path, *, hook: bool) -> Path:
    """A venv whose packages are this checkout + this environment's site-packages; with the
    hook installed at the top of its site-packages when ``hook``."""
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(folder)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    target = Path(purelib)
    paths = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    (target / "bench_paths.pth").write_text("\n".join(dict.fromkeys(paths)) + "\n")
    if hook:  # what the wheel installs, byte-compiled as pip does
        ignore = shutil.ignore_patterns("__pycache__", "_boot.py", "_boot.pth")
        shutil.copytree(ROOT / "httptrack", target / "httptrack", ignore=ignore)
        shutil.copy(HOOK_PTH, target / "httptrack.pth")
        shutil.copy(HOOK_MODULE, target / "_httptrack_boot.py")
        compileall.compile_dir(str(target / "httptrack"), quiet=1)
        compileall.compile_file(str(target / "_httptrack_boot.py"), quiet=1)
    return python


def clean_env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTPTRACK") and k != "PYTHONPATH"}
    env.update(changes)
    return env


def children_cpu() -> float:
    try:
        import resource
    except ImportError:  # Windows: no getrusage
        return float("nan")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_once(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) milliseconds of one process."""
    cpu, started = children_cpu(), time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, cwd=NEUTRAL_DIR)
    return (time.perf_counter() - started) * 1000, (children_cpu() - cpu) * 1000


def measure(
    conditions: dict[str, tuple[Path, dict[str, str]]], code: str, runs: int
) -> dict[str, list[tuple[float, float]]]:
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in conditions}
    for python, env in conditions.values():  # warm the file cache; not counted
        time_once([str(python), "-c", code], env)
    for _ in range(runs):
        for name, (python, env) in conditions.items():
            times[name].append(time_once([str(python), "-c", code], env))
    return times


def import_times(python: Path, env: dict[str, str], code: str, module: str, runs: int) -> float:
    """Median cumulative ``-X importtime`` microseconds of ``module`` while running ``code``."""
    found: list[float] = []
    for _ in range(runs):
        result = subprocess.run(
            [str(python), "-X", "importtime", "-c", code],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=NEUTRAL_DIR,
        )
        for line in result.stderr.splitlines():
            parts = line.removeprefix("import time:").split("|")
            if len(parts) == 3 and parts[2].strip() == module:
                found.append(float(parts[1]))
    return statistics.median(found)


def import_ms(python: Path, env: dict[str, str], before: str, runs: int) -> list[float]:
    """Milliseconds ``import httptrack`` takes in a fresh process (after ``before`` ran), as
    the process itself measures it: the interpreter's own start-up is not in the figure."""
    code = f"{before}; import time; t = time.perf_counter(); import httptrack; print(time.perf_counter() - t)"
    found = []
    for _ in range(runs):
        out = subprocess.run(
            [str(python), "-c", code], env=env, check=True, capture_output=True, text=True, cwd=NEUTRAL_DIR
        ).stdout
        found.append(float(out) * 1000)
    return found


def summary(values: list[tuple[float, float]], baseline: list[tuple[float, float]] | None) -> str:
    wall = statistics.median(v[0] for v in values)
    cpu = statistics.median(v[1] for v in values)
    if baseline is None:
        return f"{wall:7.1f} / {cpu:6.1f}"
    wall_delta = wall - statistics.median(v[0] for v in baseline)
    cpu_delta = cpu - statistics.median(v[1] for v in baseline)
    return f"{wall:7.1f} / {cpu:6.1f}  ({wall_delta:+.1f} / {cpu_delta:+.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="runs of `python -c pass` per condition")
    parser.add_argument("--import-runs", type=int, default=15, help="runs of `import httpx2` per condition")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 runs of each")
    args = parser.parse_args()
    if args.quick:
        args.runs = args.import_runs = 3

    scratch = Path(tempfile.mkdtemp(prefix="httptrack-bench-startup-"))
    try:
        plain = make_env(scratch / "without", hook=False)
        hooked = make_env(scratch / "with", hook=True)
        with tempfile.TemporaryDirectory() as data:
            # With the variable on, a database location of its own (nothing is written: no calls).
            on = clean_env(HTTPTRACK="1", XDG_DATA_HOME=data, XDG_CACHE_HOME=data)
            conditions = {
                "without httptrack": (plain, clean_env()),
                "installed, HTTPTRACK unset": (hooked, clean_env()),
                "installed, HTTPTRACK=1": (hooked, on),
            }
            rows = {
                "python -c pass": measure(conditions, "pass", args.runs),
                'python -c "import httpx2"': measure(conditions, "import httpx2", args.import_runs),
            }
            boot_us = import_times(hooked, on, "pass", "_httptrack_boot", args.import_runs)
            httptrack_us = import_times(hooked, on, "import httpx2", "httptrack", args.import_runs)
            alone = import_ms(hooked, clean_env(), "pass", args.runs)
            after_httpx2 = import_ms(hooked, clean_env(), "import httpx2", args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"Interpreter start-up, {sys.implementation.name} {sys.version.split()[0]} ({sys.platform}): "
        "median wall / CPU ms per process (difference to 'without httptrack')."
    )
    width = max(map(len, rows)) + 2
    names = list(conditions)
    print(" " * width + "".join(f"{name:<36}" for name in names))
    for label, times in rows.items():
        baseline = times[names[0]]
        cells = [summary(times[name], None if name == names[0] else baseline) for name in names]
        print(f"{label:<{width}}" + "".join(f"{cell:<36}" for cell in cells))
    print(f"({args.runs} runs of `pass`, {args.import_runs} of `import httpx2`, per condition, interleaved.)")
    print(
        f"-X importtime with HTTPTRACK=1: _httptrack_boot {boot_us / 1000:.2f} ms at start-up; "
        f"httptrack {httptrack_us / 1000:.1f} ms at the first import of httpx2."
    )
    for label, times in (("first thing in a process", alone), ("after import httpx2", after_httpx2)):
        print(
            f"import httptrack, {label}: median {statistics.median(times):.1f} ms "
            f"(min {min(times):.1f}, max {max(times):.1f}; {len(times)} processes, in-process clock)"
        )


if __name__ == "__main__":
    main()
