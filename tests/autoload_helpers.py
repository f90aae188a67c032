"""Run unmodified programs in a fresh interpreter, as ``HTTPTRACK=1 python app.py`` does.

The start-up hook is the ``httptrack.pth`` + ``_httptrack_boot.py`` pair that installing
httptrack puts at the top of site-packages (``pip install .`` and ``pip install -e .`` alike).

- This interpreter has them and they match this checkout: programs run with the real hook
  (``python app.py``). This is what CI does.
- It has none, or an environment installed from another checkout: the hook is reproduced as
  site.py runs it (``site.addsitedir`` on a folder holding copies of this checkout's two
  files, any other installed copy stepped aside). ``test_startup_hook_is_installed`` then
  fails if httptrack was installed from this checkout (reinstall it), or skips.
- Installed from this checkout but different (edited since): every program test fails with
  the advice to reinstall, rather than test old code.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import site
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from helpers import as_text

import httptrack

__all__ = [
    "BOOT_SOURCE",
    "PACKAGE_ROOT",
    "PTH_SOURCE",
    "Hook",
    "child_env",
    "find_hook",
    "installed_from_this_checkout",
    "rows_in",
    "run_python",
]

#: Where the httptrack under test was imported from (the child interpreters import it too).
PACKAGE_ROOT = Path(httptrack.__file__).resolve().parents[1]
#: The hook's sources in this checkout (a wheel has them only at the top of site-packages).
SOURCE_DIR = Path(__file__).resolve().parents[1] / "httptrack"
PTH_SOURCE = SOURCE_DIR / "_boot.pth"
BOOT_SOURCE = SOURCE_DIR / "_boot.py"

_EMULATE = textwrap.dedent("""\
    import os, runpy, site, sys
    folder = os.environ.pop("HTTPTRACK_TEST_SITE")
    value = os.environ.pop("HTTPTRACK_TEST_VALUE", None)
    if value is not None:  # kept from the hook installed from another checkout (see Hook.env)
        os.environ["HTTPTRACK"] = value
    other = sys.modules.pop("_httptrack_boot", None)  # installed from another checkout
    if other is not None:
        other.stop()
    del sys.argv[0]
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))  # as `python app.py` has it
    sys.path.insert(1, folder)  # before site-packages
    site.addsitedir(folder)
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
            if "HTTPTRACK" in env:  # a hook installed from another checkout must not see it
                env["HTTPTRACK_TEST_VALUE"] = env.pop("HTTPTRACK")
        return env


def site_folders() -> list[Path]:
    folders = [Path(p) for p in site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        folders.append(Path(site.getusersitepackages()))
    return folders


def installed_from_this_checkout() -> bool:
    """Whether the installed httptrack distribution was installed from this source tree."""
    try:
        text = importlib.metadata.distribution("httptrack").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return False
    url = json.loads(text)["url"] if text else ""
    if not url.startswith("file:"):
        return False
    return Path(unquote(urlsplit(url).path)).resolve() == SOURCE_DIR.parent


def find_hook(scratch: Path) -> Hook:
    for folder in site_folders():
        pth, boot = folder / "httptrack.pth", folder / "_httptrack_boot.py"
        if not (pth.exists() or boot.exists()):
            continue
        stale = [
            f.name
            for f, src in ((pth, PTH_SOURCE), (boot, BOOT_SOURCE))
            if not f.exists() or f.read_bytes() != src.read_bytes()
        ]
        if not stale:
            return Hook([sys.executable], folder, None)
        if installed_from_this_checkout():
            raise AssertionError(
                f"the start-up hook installed in {folder} is stale ({', '.join(stale)} differ from "
                f"{SOURCE_DIR}): reinstall httptrack (pip install -e .) before running these tests"
            )
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
    return subprocess.run(
        [*hook.python, str(script), *args],
        env=hook.env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rows_in(db: Path) -> list[dict[str, Any]]:
    """Every ``calls`` row, oldest first ([] when the database was never created)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [as_text(dict(r)) for r in conn.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        conn.close()


def last_json_line(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])
