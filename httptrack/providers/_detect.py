"""LLM calls recognised by their shape, on hosts no family names.

A self-hosted model (vLLM, llama.cpp, LM Studio, text-generation-inference, LocalAI, a
LiteLLM proxy) or a cloud httptrack has no entry for speaks one of a handful of APIs, each
with paths of its own. A ``POST`` to an unknown host whose path ends like one of them is
tracked, read by that API's parser, under a generic name for the shape
(``openai_compatible`` ...; the ``host`` column says where it went):

=================== ====================================================================
shape (provider)    paths (any prefix: ``/v1``, ``/openai/v1``, ``/api/v1``, ``/proxy/...``)
=================== ====================================================================
openai_compatible   ``.../chat/completions``; ``.../v1/completions``, ``embeddings``,
                    ``responses``, ``moderations``, ``audio/{transcriptions,translations,
                    speech}``, ``images/{generations,edits,variations}`` (after a
                    version segment: ``/v1``, ``/v4`` ...)
anthropic_compatible ``.../v1/messages``, ``.../v1/messages/count_tokens``
gemini_compatible   ``.../models/{model}:generateContent`` (``streamGenerateContent``,
                    ``countTokens``, ``embedContent``, ``batchEmbedContents``)
ollama              ``.../api/chat``, ``/api/generate``, ``/api/embed``, ``/api/embeddings``
cohere_compatible   ``.../v1/chat``, ``/v2/chat``, ``/v1/embed``, ``/v2/embed``,
                    ``/v1/rerank``, ``/v2/rerank``
=================== ====================================================================

Anything else (other paths, other methods) stays untracked, as before. This runs on the
app's thread for requests to hosts no family names, so the answer for a path is one
precompiled regular expression, memoized: later requests to the same path cost a
dictionary lookup.
"""

from __future__ import annotations

import re

from ._base import Provider
from .anthropic import Anthropic
from .cohere import Cohere
from .gemini import Gemini
from .openai import OpenAICompatible, endpoint_kind

__all__ = ["SHAPE_FAMILIES", "LocalOpenAICompatibleShape", "is_loopback", "shape_of"]

_SHAPE = re.compile(
    r"""
    (?P<openai>
        /chat/completions
      | /v\d+[a-z0-9]*/(?:completions|embeddings|responses|moderations
          | audio/(?:transcriptions|translations|speech)
          | images/(?:generations|edits|variations))
    )$
  | (?P<anthropic>/v1/messages(?:/count_tokens)?)$
  | (?P<gemini>/models/[^/]+:(?:generateContent|streamGenerateContent|countTokens|embedContent
      |batchEmbedContents))$
  | (?P<ollama>/api/(?:chat|generate|embed|embeddings))$
  | (?P<cohere>/v[12]/(?:chat|embed|rerank))$
    """,
    re.VERBOSE,
)


class OpenAICompatibleShape(OpenAICompatible):
    """OpenAI's API on a host no family names. A remote one is not asked for a stream's
    usage (``stream_options`` is refused by some strict servers): a stream that sends none
    gets a local count, flagged; map the host (``HTTPTRACK_HOSTS=gpu1:8000=vllm``) for exact
    stream usage from servers known to accept the option."""

    name = "openai_compatible"
    marks_usage_chunks = False


class LocalOpenAICompatibleShape(OpenAICompatibleShape):
    """OpenAI's API on this machine (``localhost``, ``127.0.0.1``, ``::1``): a server people
    run themselves (vLLM, llama.cpp, LM Studio, SGLang, TGI, LocalAI, a LiteLLM proxy), all
    of which accept ``stream_options.include_usage`` on chat completions or ignore it, so a
    stream is asked for its usage as on a mapped ``vllm`` host."""

    def include_usage(self, path: str, query: str) -> bool:
        return endpoint_kind(path) == "chat"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as ``url.host`` gives it: lower case, IPv6 without brackets) is
    this machine."""
    return (
        host == "localhost"
        or host.startswith("127.")
        or host in ("::1", "0.0.0.0")
        or host.endswith(".localhost")
    )


class AnthropicCompatibleShape(Anthropic):
    """Anthropic's Messages API on a host no family names (a proxy, a compatible server):
    priced by the model's name."""

    name = "anthropic_compatible"
    hosts = ()
    price_provider = None
    batch_discount = None


class GeminiCompatibleShape(Gemini):
    """Gemini's API on a host no family names (a proxy): priced by the model's name."""

    name = "gemini_compatible"
    hosts = ()
    price_provider = None


class CohereCompatibleShape(Cohere):
    """Cohere's API on a host no family names (a proxy; vLLM's and Jina's rerank)."""

    name = "cohere_compatible"
    hosts = ()
    price_provider = None


#: The families that read calls recognised by shape, each under its generic name.
SHAPE_FAMILIES: tuple[type[Provider], ...] = (
    OpenAICompatibleShape,
    AnthropicCompatibleShape,
    GeminiCompatibleShape,
    CohereCompatibleShape,
)

#: The last segment of every path :data:`_SHAPE` matches (Gemini's have a ``:`` instead): a
#: path ending otherwise is no API's, with no regular expression run and nothing memoized
#: (an app's REST paths with ids in them are mostly seen once).
_LAST_SEGMENTS = frozenset(
    {
        "completions",
        "embeddings",
        "responses",
        "moderations",
        "transcriptions",
        "translations",
        "speech",
        "generations",
        "edits",
        "variations",
        "messages",
        "count_tokens",
        "chat",
        "generate",
        "embed",
        "rerank",
    }
)

_memo: dict[str, str | None] = {}


def shape_of(path: str) -> str | None:
    """The API shape a ``POST`` to ``path`` is (``openai``, ``anthropic``, ``gemini``,
    ``ollama``, ``cohere``), or ``None`` for any other path. Memoized by path."""
    try:
        return _memo[path]
    except KeyError:
        pass
    stripped = path.rstrip("/")
    last = stripped[stripped.rfind("/") + 1 :]
    if last not in _LAST_SEGMENTS and ":" not in last:
        return None
    match = _SHAPE.search(stripped)
    shape = match.lastgroup if match is not None else None
    if len(_memo) > 4096:  # an app calling many distinct paths: don't grow without bound
        _memo.clear()
    _memo[path] = shape
    return shape
