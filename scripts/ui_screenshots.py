"""Screenshots of the datasette pages for the docs (``docs/img/``): the dashboard, the list
of calls, a call's record and a failed call's, at 1280 pixels wide.

The log is the tests' varied one (``tests/ui_log.py``: the real SDKs against httptrack's
fake provider). The fake answers in well under a millisecond, so before the pictures are
taken each call that reached the "provider" is given a latency a real one might have
(from its output tokens), and the rollups are rebuilt; nothing else is changed.

Needs ``/usr/bin/chromium`` and ``playwright`` (``pip install -e '.[test]'``); with
``pngquant`` on the PATH the images are made smaller::

    python scripts/ui_screenshots.py            # writes docs/img/*.png
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def plausible_latencies(db: Path) -> None:
    """Latency and time to first token as a hosted model might show them: a few hundred
    milliseconds to start, ~20 ms per output token (cache hits keep theirs)."""
    from httptrack.log import _rollup

    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute(
            """UPDATE calls SET
                 ttft_ms = 280 + (rowid * 97) % 400,
                 latency_ms = 300 + (rowid * 61) % 400 + 21.5 * coalesce(output_tokens, 0)
               WHERE cached = 0"""
        )
        conn.execute("UPDATE calls SET latency_ms = max(latency_ms, ttft_ms) WHERE ttft_ms IS NOT NULL")
        conn.execute("UPDATE calls SET ttft_ms = NULL WHERE stream = 0")
        _rollup.rebuild_rollups(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()

    import uvicorn
    from playwright.sync_api import sync_playwright
    from ui_log import record_ui_log

    import httptrack
    from httptrack.cli._ui import make_datasette

    folder = Path(tempfile.mkdtemp(prefix="httptrack-shots-"))
    log = record_ui_log(folder / "log.db", folder / "cache")
    httptrack.flush()
    plausible_latencies(log.db)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(make_datasette(log.db).app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    shots = [
        ("dashboard.png", "/-/httptrack?days=30", 1000),
        ("calls.png", "/log/calls", 1000),
        ("call.png", f"/log/calls/{log.ids['prompt_cache']}", 1000),
        ("call-failed.png", f"/log/calls/{log.ids['rate_limited']}", 640),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for name, path, height in shots:
            page = browser.new_page(viewport={"width": 1280, "height": height})
            page.goto(base + path)
            page.screenshot(path=str(args.out / name))
            page.close()
            if shutil.which("pngquant"):  # 256 colours: a third of the size, text as sharp
                subprocess.run(
                    [
                        "pngquant",
                        "--quality",
                        "70-95",
                        "--speed",
                        "1",
                        "--force",
                        "--ext",
                        ".png",
                        str(args.out / name),
                    ],
                    check=True,
                )
            print(f"{args.out / name}  ({(args.out / name).stat().st_size // 1024} KB)")
        browser.close()
    server.should_exit = True
    thread.join(10)


if __name__ == "__main__":
    main()
