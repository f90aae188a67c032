"""Response cache keys: which requests are "the same request".

A key covers the method, the URL, the request body in canonical form (JSON with sorted keys
and no insignificant whitespace, so the same request written differently gets the same key),
the request headers that change a provider's answer (:data:`KEY_HEADERS`, and those the
settings name in ``cache_key_headers``) and the credential (every header
``_redact.is_secret_header`` calls one). Everything goes through a keyed hash
(BLAKE2b-256 in keyed mode, a MAC like HMAC) under a random salt kept in the cache folder
(:func:`load_salt`), so:

- one API key's answers are never served to another (the credential is part of the key);
- a key contains no credential, and means nothing outside its folder: no precomputed table
  applies, and two folders that saw the same API key have nothing in common. (Provider API
  keys are long random strings: even with the salt, one cannot be guessed from a cache key.)

The key is computed on the app's thread, so the expensive part is memoized: the canonical
digest of a body is remembered by the body's exact bytes (an SDK sends the same request as
the same bytes), and header names are classified once.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import secrets
import threading
from array import array
from collections import OrderedDict
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._json import loads_bytes
from .._redact import is_secret_header
from ..providers import cache_key_headers

if TYPE_CHECKING:
    from .._exchange import Exchange

__all__ = ["KEY_HEADERS", "KEY_VERSION", "SALT_FILE", "body_digest", "load_salt", "request_key"]

#: Bumped when what goes into a key changes, so old entries are simply never found again.
KEY_VERSION = b"httptrack-cache-key-1"
SALT_FILE = "httptrack.salt"
_SALT_BYTES = 32

#: Request headers that select what a provider answers: the encoding the body comes back
#: in, and each provider family's own (API version, beta features, the account it bills:
#: ``Provider.cache_key_headers``). All others (user agent, SDK telemetry, retry counters,
#: tracing ids) are left out, or no request would ever repeat.
KEY_HEADERS = frozenset({b"accept", b"accept-encoding"}) | cache_key_headers()

#: Secret-looking headers that do not say who is calling. Cookies: LLM APIs authenticate
#: with keys, while the cookies a client's jar sends back (Cloudflare's ``__cf_bm``,
#: rotated every half hour) would make every request unique.
_NOT_CREDENTIALS = frozenset({b"cookie", b"cookie2"})

_IGNORED, _KEYED, _SECRET = 0, 1, 2
#: Raw header name (as the app spelled it) → how it counts in a key.
_header_kinds: dict[bytes, int] = {}


def _classify(name: bytes) -> int:
    lower = name.lower()
    if lower in KEY_HEADERS:
        kind = _KEYED
    elif lower in _NOT_CREDENTIALS:
        kind = _IGNORED
    elif is_secret_header(lower.decode("latin-1")):
        kind = _SECRET
    else:
        kind = _IGNORED
    if len(_header_kinds) > 4096:  # headers named by the app without end: don't grow forever
        _header_kinds.clear()
    _header_kinds[name] = kind
    return kind


# -- bodies -------------------------------------------------------------------------------

_JSON_START = re.compile(rb"\s*[{\[]")
#: json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False), made once.
_canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
#: Bodies up to this size have their digest remembered, up to this many bytes in all (each
#: counted with what its entry costs around it: the key's bytes object, the digest, the
#: model's text and the OrderedDict's node, ~_MEMO_ENTRY_BYTES: with short prompts that is
#: most of the memory).
_MEMO_BODY_BYTES = 256 * 1024
_MEMO_TOTAL_BYTES = 4 * 1024 * 1024
_MEMO_ENTRY_BYTES = 300
#: Oldest first. An OrderedDict, not a dict: evicting a plain dict's first key
#: (``next(iter(d))``) walks over every slot deleted before it, so once the memo is full a
#: process sending new prompts paid more on each call (10 µs → 90 µs per body here).
_memo: OrderedDict[bytes, tuple[bytes, str | None]] = OrderedDict()
_memo_bytes = 0
_memo_lock = threading.Lock()


def _canonical_digest(body: bytes) -> tuple[bytes, str | None]:
    """``(digest, model)``: the SHA-256 of the body's canonical JSON form (or of the raw
    bytes when it is not JSON), and the ``model`` it names, if any."""
    if not body:
        return hashlib.sha256(b"empty").digest(), None
    if _JSON_START.match(body):
        found = _fast_canonical(body)
        if found is not None:
            data, canonical = found
        else:
            try:
                data = loads_bytes(body)
                canonical = _canonical_json(data).encode("utf-8", "surrogatepass")
            except (ValueError, RecursionError):
                data = canonical = None  # not JSON, or nested too deeply to decode: keyed by its bytes
        if canonical is not None:
            model = data.get("model") if isinstance(data, dict) else None
            return _sha256(b"json\n", canonical).digest(), model if isinstance(model, str) else None
    return _sha256(b"raw\n", body).digest(), None


#: hashlib lets go of the GIL while it hashes 2 KiB or more at once (HASHLIB_GIL_MINSIZE):
#: on the app's thread that hands it to the writer mid-call (tens of µs of CPU, and the
#: app's thread then waits for it back). Fed in smaller pieces, it keeps the GIL.
_HASH_PIECE = 2047


def _sha256(prefix: bytes, data: bytes) -> Any:
    """SHA-256 of ``prefix + data``, on the app's thread: a short text by Python's own
    implementation (OpenSSL's costs ~5 µs more to set up on every call there, its code
    cold by then), a long one by OpenSSL's (4x faster per byte), in pieces."""
    if len(data) <= _SMALL and _builtin_sha256 is not None:
        return _builtin_sha256(prefix + data)
    digest = hashlib.sha256(prefix)
    _update(digest, data)
    return digest


#: Up to this many bytes, :func:`_sha256` uses Python's own implementation.
_SMALL = 512


def _python_sha256() -> Any:
    for name in ("_sha256", "_sha2"):  # (_sha2 from Python 3.12)
        with contextlib.suppress(ImportError, AttributeError):
            return importlib.import_module(name).sha256
    return None  # pragma: no cover - a Python built without it


_builtin_sha256 = _python_sha256()


def _update(digest: Any, data: bytes) -> None:
    if len(data) <= _HASH_PIECE:
        digest.update(data)
        return
    view = memoryview(data)
    for start in range(0, len(data), _HASH_PIECE):
        digest.update(view[start : start + _HASH_PIECE])


class _NotAsJson(Exception):
    """A float that json and msgspec write differently (see :func:`_fast_canonical`)."""


def _key_float(text: str) -> float:
    # json.dumps writes a float as repr() does: exponent notation below 1e-4 and from 1e16
    # (msgspec writes 1e-05 as 0.00001, 1e+16 as 1e16); non-finite ones as NaN/Infinity.
    value = float(text)  # what json.loads makes of it (float() of the same text)
    if value and not 1e-4 <= abs(value) < 1e16:
        raise _NotAsJson
    return value


try:
    from msgspec.json import Decoder as _Decoder
    from msgspec.json import Encoder as _Encoder

    _key_decode: Any = _Decoder(float_hook=_key_float).decode
    _sorted_encode: Any = _Encoder(order="sorted").encode
except (ImportError, TypeError):  # pragma: no cover - msgspec is a dependency (>= 0.18)
    _key_decode = _sorted_encode = None


def _fast_canonical(body: bytes) -> tuple[Any, bytes] | None:
    """The decoded body and its canonical form, both made by msgspec (~10x faster than
    json's encoder, ~50 µs instead of ~600 µs for a 40 KB conversation), or ``None``:
    then json's own encoder makes it. Byte for byte what json makes (keys already stored
    stay found): UTF-8 text with the same escapes, keys in code point order, integers of
    any size, and floats written alike, which holds for every finite float from 1e-4 to
    1e16 (repr's fixed notation; ``_key_float`` refuses the others). Anything msgspec
    refuses (NaN, a lone surrogate, such a float) goes json's way."""
    if _key_decode is None:
        return None
    try:
        data = _key_decode(body)
        return data, _sorted_encode(data)
    except Exception:
        return None


#: The hashes of bodies seen recently (one slot per hash's low bits; a fixed 128 KiB): a
#: body is memoized only the second time it comes, so an app whose every request is new
#: (each a miss) holds none, and its memo costs no memory (its long-lived little objects
#: also kept whole allocator arenas of the process from being given back).
_SEEN_SLOTS = 16384
_seen = array("q", bytes(8 * _SEEN_SLOTS))


def body_digest(body: bytes) -> tuple[bytes, str | None]:
    """:func:`_canonical_digest`, remembered by the exact bytes of small bodies seen twice
    recently (an exact match: dict lookup compares the bytes, so there is no collision to
    worry about; a collision of :data:`_seen`'s hashes only memoizes a body once early)."""
    global _memo_bytes
    found = _memo.get(body)
    if found is not None:
        return found
    result = _canonical_digest(body)
    size = len(body) + _MEMO_ENTRY_BYTES
    if size <= _MEMO_BODY_BYTES:
        h = hash(body)  # computed once by the lookup above, and kept by the bytes object
        slot = h % _SEEN_SLOTS
        if _seen[slot] != h:
            _seen[slot] = h  # the first time (lately): not memoized
            return result
        with _memo_lock:
            if body not in _memo:
                while _memo and _memo_bytes + size > _MEMO_TOTAL_BYTES:
                    oldest, _ = _memo.popitem(last=False)
                    _memo_bytes -= len(oldest) + _MEMO_ENTRY_BYTES
                _memo[body] = result
                _memo_bytes += size
    return result


# -- keys ---------------------------------------------------------------------------------

_first = itemgetter(0)
_Layout = tuple[tuple[tuple[int, bytes], ...], tuple[tuple[int, bytes], ...]]
#: (header names in order, the app's key headers) → where the keyed and the secret headers
#: are, each with its ``name:`` prefix: an SDK sends the same names in the same order on
#: every request, so each request's headers are classified once, not one by one.
_layouts: dict[tuple[tuple[bytes, ...], Any], _Layout] = {}


def _layout(names: tuple[bytes, ...], extra: Any) -> _Layout:
    keyed: list[tuple[int, bytes]] = []
    secret: list[tuple[int, bytes]] = []
    for index, name in enumerate(names):
        kind = _header_kinds.get(name)
        if kind is None:
            kind = _classify(name)
        if kind == _IGNORED and extra and name.lower() in extra:
            kind = _KEYED
        if kind == _KEYED:
            keyed.append((index, name.lower() + b":"))
        elif kind == _SECRET:
            secret.append((index, name.lower() + b":"))
    layout = (tuple(keyed), tuple(secret))
    if len(_layouts) > 1024:  # headers named by the app without end: don't grow forever
        _layouts.clear()
    _layouts[(names, extra)] = layout
    return layout


def request_key(salt: bytes, exchange: Exchange) -> tuple[str, str | None]:
    """``(key, model)`` for a request: the cache key (hex keyed BLAKE2b-256) and the model the
    body names (for messages)."""
    digest, model = body_digest(exchange.request_body)
    headers = exchange.request_headers
    extra = exchange.settings.cache_key_headers  # the app's own (HTTPTRACK_CACHE_KEY_HEADERS)
    names = tuple(map(_first, headers))
    found = _layouts.get((names, extra))
    if found is None:
        found = _layout(names, extra)
    keyed_at, secret_at = found
    keyed = [prefix + headers[index][1] for index, prefix in keyed_at]
    secret = [prefix + headers[index][1] for index, prefix in secret_at]
    if len(keyed) > 1:
        keyed.sort()
    if len(secret) > 1:
        secret.sort()
    port = "" if exchange.port is None else str(exchange.port)
    url = f"{exchange.method}\n{exchange.scheme}://{exchange.host}:{port}{exchange.path}?{exchange.query}"
    material = b"\n".join(
        (KEY_VERSION, url.encode("utf-8", "surrogatepass"), b"\x00".join(keyed), b"\x00".join(secret), digest)
    )
    # BLAKE2b in keyed mode is a MAC (as HMAC-SHA256 is) at half the cost, and it keeps the
    # GIL for inputs this small (hmac.digest releases it, handing the app's thread over to
    # the background writer mid-call).
    return hashlib.blake2b(material, digest_size=32, key=salt, person=b"httptrack-key").hexdigest(), model


# -- the salt -----------------------------------------------------------------------------


def load_salt(directory: Path) -> bytes:
    """The folder's salt, created (readable by its owner only) on first use. Several
    processes may race to create it: the file appears whole or not at all (it is written
    aside, then hard-linked into place), and every process ends up with the same salt."""
    path = directory / SALT_FILE
    salt = _read_salt(path)
    if salt is not None:
        return salt
    temp = directory / f".{SALT_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(os.urandom(_SALT_BYTES))
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process won the race: use its salt
        except OSError:  # a file system without hard links
            if _read_salt(path) is None:
                os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    salt = _read_salt(path)
    if salt is None:  # damaged (wrong length): replace it; old entries become unreachable
        fresh = os.urandom(_SALT_BYTES)
        temp.write_bytes(fresh)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
        return fresh
    return salt


def _read_salt(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data if len(data) == _SALT_BYTES else None
