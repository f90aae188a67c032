"""Where a call log is: a SQLite file (a ``Path``) or a shared Postgres database (a
:class:`DatabaseURL`, from ``HTTPTRACK_DB=postgresql://user:pass@host:5432/db``).

A ``DatabaseURL`` prints without its password (``str()``, ``repr()``, f-strings): the
settings, the writer's fault messages, the CLI's errors and the transport's ``repr`` show
where the log is and never the credential. Only the connection code reads ``.url``.
Imported by ``_settings`` at ``import httptrack``: no psycopg here, and what parsing a URL
needs is imported when one is given.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SCHEMES", "DatabaseURL", "LogTarget", "is_database_url", "log_target"]

#: The URL schemes that name a Postgres log (libpq's own two).
SCHEMES = ("postgresql://", "postgres://")
_MASK = "***"
#: The libpq query parameters that hold a credential: the password, the client key's passphrase.
_SECRET_PARAMS = ("password", "sslpassword")


def is_database_url(value: object) -> bool:
    """``value`` names a Postgres log (a ``postgresql://`` or ``postgres://`` URL)."""
    return isinstance(value, DatabaseURL) or (
        isinstance(value, str) and value.strip().lower().startswith(SCHEMES)
    )


class DatabaseURL:
    """A ``postgresql://`` log target. Compares and hashes by its full URL; prints without
    its password (in the authority or in a ``password=`` query parameter)."""

    __slots__ = ("password", "redacted", "secrets", "url")

    url: str
    redacted: str
    password: str | None
    #: Every credential in the URL (the password, an ``sslpassword=``): what :meth:`scrub` masks.
    secrets: tuple[str, ...]

    def __init__(self, url: str) -> None:
        from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

        url = url.strip()
        if not is_database_url(url):
            raise ValueError(f"not a postgresql:// URL: {url.split('@')[-1]!r}")
        parts = urlsplit(url)
        password = parts.password
        netloc = parts.netloc
        if password is not None:
            user_info, _, host = netloc.rpartition("@")
            netloc = f"{user_info.partition(':')[0]}:{_MASK}@{host}"
        query = parts.query
        query_pairs = parse_qsl(query, keep_blank_values=True)
        if any(name == "password" for name, _ in query_pairs):
            password = password or next(value for name, value in query_pairs if name == "password")
        secrets = [value for name, value in query_pairs if name in _SECRET_PARAMS and value]
        if secrets:
            query = urlencode([(n, _MASK if n in _SECRET_PARAMS else v) for n, v in query_pairs], safe="*")
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "password", password)
        object.__setattr__(self, "secrets", tuple({password, *secrets} - {None, ""}))
        object.__setattr__(
            self, "redacted", urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("DatabaseURL is immutable")

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"DatabaseURL({self.redacted!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatabaseURL) and other.url == self.url

    def __hash__(self) -> int:
        return hash(("DatabaseURL", self.url))

    def __reduce__(self) -> tuple[type[DatabaseURL], tuple[str]]:
        return DatabaseURL, (self.url,)

    def scrub(self, text: str) -> str:
        """``text`` (an error message) with this URL's password masked, wherever it appears."""
        from urllib.parse import unquote

        text = text.replace(self.url, self.redacted)
        for secret in self.secrets:
            for form in {secret, unquote(secret)}:
                text = text.replace(form, _MASK)
        return text

    def spool_folder(self) -> Path:
        """Where this process keeps calls not yet written to this log: a local folder (the
        spool must survive the process, not reach the server), one per server and database,
        named without the password (rotating it keeps the spool)."""
        import hashlib
        import re
        from urllib.parse import urlsplit

        base = os.environ.get("XDG_DATA_HOME")  # as _settings.default_db_path's folder
        data = Path(base) if base else Path.home() / ".local/share"
        parts = urlsplit(self.redacted)
        name = re.sub(
            r"[^A-Za-z0-9_.]+", "_", f"{parts.hostname or 'local'}-{parts.port or 5432}{parts.path}"
        )
        digest = hashlib.sha256(self.redacted.encode()).hexdigest()[:12]
        return data / "httptrack" / "postgres" / f"{name}-{digest}-spool"


#: A call log's location: a SQLite file, or a Postgres database.
LogTarget = Path | DatabaseURL


def log_target(value: str | os.PathLike[str] | DatabaseURL) -> LogTarget:
    """``HTTPTRACK_DB``/``db=``/``--db`` as a log target: a URL stays a URL (a ``Path``
    would fold its ``//``), anything else is a file path (``~`` expanded)."""
    if isinstance(value, DatabaseURL):
        return value
    if isinstance(value, str) and is_database_url(value):
        return DatabaseURL(value)
    return Path(value).expanduser()
