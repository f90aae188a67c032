"""Azure OpenAI: OpenAI's API served from a customer's Azure resource.

Hosts are named per resource: ``{resource}.openai.azure.com``, and the newer
``{resource}.cognitiveservices.azure.com`` / ``{resource}.services.ai.azure.com`` where they
serve OpenAI-style paths. Two URL styles:

- dated API versions: ``/openai/deployments/{deployment}/chat/completions?api-version=...``
  (also ``/openai/responses?api-version=...``). The request names a *deployment*, whose
  name is the customer's choice; the response's ``model`` names the real model
  (``gpt-4o-2024-08-06``), so ``model`` holds the deployment and ``response_model`` the
  model, which is what the call is priced as.
- the v1 API: ``/openai/v1/chat/completions``, the deployment named in the body's ``model``.

Azure AI Foundry also serves Anthropic's Messages API (``/anthropic/v1/messages``); that is
read by the Anthropic parser and priced with genai-prices' ``azure`` prices.

``stream_options.include_usage`` exists from API version 2024-09-01-preview on (older
versions reject the request with ``Unrecognized request argument supplied: stream_options``)
and in the v1 API, so httptrack only asks for the usage chunk there.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from ._base import Parsed, Provider, shape_parser
from .openai import OpenAICompatible

__all__ = ["AzureOpenAI", "accepts_stream_options"]

_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/")
_VERSION_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
#: The first API version whose chat completions accept ``stream_options``.
_STREAM_OPTIONS_SINCE = (2024, 9, 1)


def accepts_stream_options(path: str, query: str) -> bool:
    """Whether this Azure OpenAI endpoint accepts ``stream_options`` (see module docstring)."""
    if "/openai/v1/" in path:
        return True
    version = dict(parse_qsl(query)).get("api-version", "")
    match = _VERSION_DATE.match(version)
    if match is None:
        return version in ("preview", "latest")  # the v1 API's own version names
    return tuple(int(part) for part in match.groups()) >= _STREAM_OPTIONS_SINCE


class AzureOpenAI(OpenAICompatible):
    name = "azure_openai"
    hosts = ("*.openai.azure.com", "*.cognitiveservices.azure.com", "*.services.ai.azure.com")
    request_id_headers = ("x-request-id", "apim-request-id", "x-ms-request-id")
    # genai-prices' azure falls back to OpenAI's, Anthropic's, DeepSeek's and xAI's prices.
    price_provider = "azure"
    batch_discount = 0.5  # the global batch API

    def parser_for(self, method: str, path: str) -> Provider:
        if path.startswith("/anthropic/"):
            return shape_parser("anthropic")
        return super().parser_for(method, path)

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        super().read_request(parsed, method, path, query, body)
        match = _DEPLOYMENT.search(path)
        if match is not None:
            parsed.state["deployment"] = match.group(1)
            if parsed.model is None:
                parsed.model = match.group(1)

    def include_usage(self, path: str, query: str) -> bool:
        return path.rstrip("/").endswith("/chat/completions") and accepts_stream_options(path, query)
