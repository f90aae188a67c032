"""httptrack: see, price, cache and cap every LLM API call a Python program makes.

An HTTP transport for ``httpx`` and ``httpx2`` that records each call to OpenAI,
Anthropic, Ollama, Gemini, Mistral, Groq and other LLM APIs as one row in SQLite.

```python
import httpx2, httptrack
from openai import OpenAI

client = OpenAI(http_client=httpx2.Client(transport=httptrack.TrackingTransport()))
with httptrack.attribute(user="alice", service="summarizer"):
    client.chat.completions.create(model="gpt-4o-mini", messages=[...])
```

Importing httptrack is light: price data, token encodings, pydantic and the database
library load on first use, in the background writer where possible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._context import attribute
from ._errors import CacheMiss
from ._faults import fault_counts
from ._settings import Settings, SettingsError
from ._transport import AsyncTrackingTransport, TrackingTransport
from .autoload import install, uninstall

if TYPE_CHECKING:
    from .limits import Limit
    from .log._reader import Log, open_log
    from .log._records import CallRecord
    from .providers import register_provider
    from .record._writer import flush

__version__ = "0.1.0"

__all__ = [
    "AsyncTrackingTransport",
    "CacheMiss",
    "CallRecord",
    "Limit",
    "Log",
    "Settings",
    "SettingsError",
    "TrackingTransport",
    "__version__",
    "attribute",
    "fault_counts",
    "flush",
    "install",
    "open_log",
    "register_provider",
    "uninstall",
]

# Public names whose modules are heavy (pydantic, sqlite-utils, sqlite3, the providers):
# imported on first access. (A transport imports the writer and the providers when it is
# made, so `import httptrack` itself stays light.)
_LAZY = {
    "CallRecord": ".log._records",
    "Limit": ".limits",
    "Log": ".log._reader",
    "flush": ".record._writer",
    "open_log": ".log._reader",
    "register_provider": ".providers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'httptrack' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
