"""Run unmodified programs in a fresh interpreter, as ``HTTPTRACK=1 python app.py`` does.

The start-up hook is the ``httptrack.pth`` + ``_httptrack_boot.py`` pair that installing
httptrack puts in site-packages (``pip install .`` and ``pip install -e .`` alike). When this
interpreter has them, and they match the source, programs run with the real hook
(``python app.py``). When it has none (an environment installed before the hook existed),
the hook is reproduced as site.py would run it — ``site.addsitedir`` on a folder holding a
copy of both files — and ``test_startup_hook_is_installed`` fails to say the environment
needs reinstalling. A stale installed hook (files that differ from the source) fails every
program test with the same advice, rather than testing old code.
"""

from __future__ import annotations

import json
import os
import site
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httptrack

__all__ = [
    "BOOT_SOURCE",
    "PACKAGE_ROOT",
    "PTH_SOURCE",
    "Hook",
    "child_env",
    "find_hook",
    "rows_in",
    "run_python",
]

PACKAGE_DIR = Path(httptrack.__file__).resolve().parent
PACKAGE_ROOT = PACKAGE_DIR.parent
PTH_SOURCE = PACKAGE_DIR / "_boot.pth"
BOOT_SOURCE = PACKAGE_DIR / "_boot.py"

_EMULATE = textwrap.dedent("""\
    import os, runpy, site, sys
    site.addsitedir(os.environ.pop("HTTPTRACK_TEST_SITE"))
    del sys.argv[0]
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


class Hook:
    """How a child interpreter gets the start-up hook: ``python`` is the command prefix that
    runs a script with it; ``installed_in`` the site-packages folder holding the real one."""

    def __init__(self, python: list[str], installed_in: Path | None, emulated_site: Path | None) -> None:
        self.python = python
        self.installed_in = installed_in
        self.emulated_site = emulated_site

    def env(self, env: dict[str, str]) -> dict[str, str]:
        if self.emulated_site is not None:
            env = {**env, "HTTPTRACK_TEST_SITE": str(self.emulated_site)}
        return env


def site_folders() -> list[Path]:
    folders = [Path(p) for p in site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        folders.append(Path(site.getusersitepackages()))
    return folders


def find_hook(scratch: Path) -> Hook:
    for folder in site_folders():
        pth, boot = folder / "httptrack.pth", folder / "_httptrack_boot.py"
        if pth.exists() or boot.exists():
            stale = [f.name for f, src in ((pth, PTH_SOURCE), (boot, BOOT_SOURCE))
                     if not f.exists() or f.read_bytes() != src.read_bytes()]  # fmt: skip
            if stale:
                raise AssertionError(
                    f"the installed start-up hook in {folder} is stale ({', '.join(stale)} differ from "
                    f"{PACKAGE_DIR}): reinstall httptrack (pip install -e .) before running these tests"
                )
            return Hook([sys.executable], folder, None)
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "httptrack.pth").write_bytes(PTH_SOURCE.read_bytes())
    (scratch / "_httptrack_boot.py").write_bytes(BOOT_SOURCE.read_bytes())
    return Hook([sys.executable, "-c", _EMULATE], None, scratch)


def child_env(**changes: str | None) -> dict[str, str]:
    """This process's environment (already free of HTTPTRACK_* and proxies, see conftest),
    with the httptrack under test first on the path, and ``changes`` applied (None unsets)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_python(hook: Hook, script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*hook.python, str(script), *args], env=hook.env(env), capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def rows_in(db: Path) -> list[dict[str, Any]]:
    """Every ``calls`` row, oldest first ([] when the database was never created)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        conn.close()


def last_json_line(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])
