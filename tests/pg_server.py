"""A throwaway PostgreSQL server for the tests and benchmarks: ``initdb`` into a temporary
folder, ``pg_ctl start`` on a free loopback port (its unix socket in the same folder),
``pg_ctl stop`` and the folder deleted at the end. Nothing is mocked: the Postgres log, the
limits counted in Postgres and the CLI on a ``postgresql://`` URL run against a real server.

As root (CI containers), the server runs as the ``postgres`` user (``runuser``): Postgres
refuses to run as root. ``PG_BIN`` overrides where the binaries are looked for.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresServer", "ServerUnavailable", "find_bin"]

USER = "httptrack"
PASSWORD = "s3cret-pw"


class ServerUnavailable(RuntimeError):
    """No PostgreSQL server could be started here (not installed, or it failed)."""


def find_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (PostgreSQL 15 preferred)."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: p != "/usr/lib/postgresql/15/bin"
    )
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One throwaway server. ``start()`` raises ``ServerUnavailable`` saying why."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.port = 0
        self._bin: Path | None = None
        self._as: list[str] = []

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    def url(self, dbname: str = "httptrack") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert self._bin is not None
        command = [*self._as, str(self._bin / args[0]), *args[1:]]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> PostgresServer:
        self._bin = find_bin()
        if self._bin is None:
            raise ServerUnavailable("PostgreSQL is not installed (no initdb; apt-get install postgresql)")
        self.folder = Path(tempfile.mkdtemp(prefix="httptrack-pg-"))
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise ServerUnavailable("running as root and no runuser to start PostgreSQL as postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres", "postgres")
        os.chmod(self.folder, 0o700)
        pwfile = self.folder / "pw"
        pwfile.write_text(PASSWORD)
        if self._as:
            shutil.chown(pwfile, "postgres", "postgres")
        made = self._run(
            "initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile), "-A", "scram-sha-256",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        if made.returncode != 0:
            self.stop()
            raise ServerUnavailable(f"initdb failed: {made.stderr.strip()[-500:]}")
        for _ in range(3):  # a port taken between the probe and the start: try another
            self.port = _free_port()
            options = (
                f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB"
            )
            started = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.folder / "log"),
                "-o",
                options,
                "-w",
                "-t",
                "30",
                "start",
            )
            if started.returncode == 0:
                try:
                    self.create_database("httptrack")
                except BaseException:
                    self.stop()
                    raise
                return self
        log = (
            (self.folder / "log").read_text(errors="replace")[-800:] if (self.folder / "log").exists() else ""
        )
        self.stop()
        raise ServerUnavailable(f"pg_ctl start failed: {started.stderr.strip()[-300:]} {log}")

    def pause(self) -> None:
        """Stop the server (fast), keeping its data: ``resume()`` brings it back."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c max_connections=200"
        started = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options, "-w", "start"
        )
        if started.returncode != 0:
            raise ServerUnavailable(f"pg_ctl start failed: {started.stderr.strip()[-300:]}")

    def create_database(self, name: str) -> str:
        """A fresh database on this server; its URL."""
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as exc:
            raise ServerUnavailable(f"CREATE DATABASE failed: {exc}") from exc
        return self.url(name)

    def stop(self) -> None:
        if self.folder is None:
            return
        if self.port and self.data.exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
