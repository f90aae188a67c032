"""Routing a request to the fake provider's answer: ``fake_exchange``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs

from ._anthropic import (
    _anthropic_behavior_error,
    _anthropic_count_tokens,
    _anthropic_error,
    _anthropic_headers,
    _anthropic_invalid,
    _anthropic_messages,
    _anthropic_model,
    _anthropic_models,
)
from ._common import _INVALID_KEY, _OPENAI_MODELS, MAGIC_MODELS, FakeResponse, _Call, _json
from ._ollama import (
    _ollama_behavior_error,
    _ollama_chat,
    _ollama_embed,
    _ollama_embeddings_legacy,
    _ollama_error,
    _ollama_generate,
    _ollama_tags,
    _ollama_version,
)
from ._openai import (
    _openai_behavior_error,
    _openai_chat,
    _openai_completions,
    _openai_embeddings,
    _openai_error,
    _openai_headers,
    _openai_model,
    _openai_models,
    _openai_responses,
)

__all__ = ["fake_exchange"]


_Route = Callable[[_Call], FakeResponse]
# (method, provider, handler) by path suffix / exact Ollama path; checked in order.
_SUFFIX_ROUTES: tuple[tuple[str, str, str, _Route], ...] = (
    ("/chat/completions", "POST", "openai", _openai_chat),
    ("/completions", "POST", "openai", _openai_completions),
    ("/embeddings", "POST", "openai", _openai_embeddings),
    ("/responses", "POST", "openai", _openai_responses),
    ("/messages/count_tokens", "POST", "anthropic", _anthropic_count_tokens),
    ("/messages", "POST", "anthropic", _anthropic_messages),
)
_OLLAMA_ROUTES: dict[str, tuple[str, _Route]] = {
    "/api/chat": ("POST", _ollama_chat),
    "/api/generate": ("POST", _ollama_generate),
    "/api/embed": ("POST", _ollama_embed),
    "/api/embeddings": ("POST", _ollama_embeddings_legacy),
    "/api/tags": ("GET", _ollama_tags),
    "/api/version": ("GET", _ollama_version),
}
_MODEL_PATH = re.compile(r"/models/([^/]+)$")


def _resolve(call: _Call) -> tuple[str, _Route] | None:
    """(provider, handler) for the call, or None when no route matches."""
    path = call.path.rstrip("/") or "/"
    if path in _OLLAMA_ROUTES:
        method, route = _OLLAMA_ROUTES[path]
        return ("ollama", route) if call.method == method else None
    anthropic = "anthropic-version" in call.headers
    if path.endswith("/models") and call.method == "GET":
        return ("anthropic", _anthropic_models) if anthropic else ("openai", _openai_models)
    match = _MODEL_PATH.search(path)
    if match and call.method == "GET":
        model_id = match.group(1)
        if anthropic:
            return "anthropic", lambda c: _anthropic_model_route(c, model_id)
        return "openai", lambda c: _openai_model_route(c, model_id)
    for suffix, method, provider, route in _SUFFIX_ROUTES:
        if path.endswith(suffix) and call.method == method:
            return provider, route
    return None


def _openai_model_route(call: _Call, model_id: str) -> FakeResponse:
    if model_id in MAGIC_MODELS or model_id not in _OPENAI_MODELS:
        return _openai_error(
            404,
            f"The model '{model_id}' does not exist",
            "invalid_request_error",
            "model_not_found",
            "model",
        )
    return _json(200, _openai_model(model_id), _openai_headers(), pretty=True)


def _anthropic_model_route(call: _Call, model_id: str) -> FakeResponse:
    model = _anthropic_model(model_id)
    if model is None:
        return _anthropic_error(404, "not_found_error", f"model: {model_id}")
    return _json(200, model, _anthropic_headers())


def _bad_body(provider: str, call: _Call) -> FakeResponse:
    if provider == "anthropic":
        return _anthropic_error(400, "invalid_request_error", "Request body must be a JSON object")
    if provider == "ollama":
        return _ollama_error(400, "invalid character in request body")
    return _openai_error(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
        "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
        "JSON. If you have trouble figuring out how to fix this, please contact us through our help "
        "center at help.openai.com.)",
        "invalid_request_error",
    )


def _unauthorized(provider: str, call: _Call) -> FakeResponse | None:
    if provider == "openai" and call.headers.get("authorization", "") == f"Bearer {_INVALID_KEY}":
        return _openai_error(
            401,
            "Incorrect API key provided: invalid-key. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )
    if provider == "anthropic" and call.headers.get("x-api-key") == _INVALID_KEY:
        return _anthropic_error(401, "authentication_error", "invalid x-api-key")
    if provider == "ollama" and call.headers.get("authorization", "") == f"Bearer {_INVALID_KEY}":
        return _ollama_error(401, "unauthorized")
    return None


def _cut(response: FakeResponse) -> FakeResponse:
    """Keep the first half of the body (whole chunks for streams) and mark it to be aborted."""
    if len(response.chunks) > 1:
        chunks = response.chunks[: max(1, len(response.chunks) // 2)]
    else:
        body = response.body
        chunks = [body[: len(body) // 2]]
    return FakeResponse(response.status, response.headers, chunks, response.delay, abort=True)


def fake_exchange(
    method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
) -> FakeResponse:
    """Answer one HTTP request the way OpenAI, Anthropic or Ollama would. Pure and deterministic."""
    lowered = {k.lower(): v for k, v in headers.items()}
    call = _Call(method.upper(), path or "/", parse_qs(query or ""), lowered, body or b"")
    resolved = _resolve(call)
    if resolved is None:
        response = _openai_error(404, f"Invalid URL ({call.method} {call.path})", "invalid_request_error")
    else:
        provider, route = resolved
        response = _dispatch(provider, route, call)
    try:
        delay = float(lowered.get("x-fake-delay", "0"))
    except ValueError:
        delay = 0.0
    response.delay = max(0.0, delay)
    return response


def _dispatch(provider: str, route: _Route, call: _Call) -> FakeResponse:
    if call.method == "POST":
        try:
            call.data = json.loads(call.body or b"null")
        except ValueError:
            return _bad_body(provider, call)
        if not isinstance(call.data, dict):
            return _bad_body(provider, call)
    else:
        call.data = {}
    if (denied := _unauthorized(provider, call)) is not None:
        return denied
    if call.method == "POST":
        if provider == "anthropic":
            if (invalid := _anthropic_invalid(call)) is not None:
                return invalid
            error = _anthropic_behavior_error(call)
        elif provider == "ollama":
            if not call.model:
                return _ollama_error(400, "model is required")
            error = _ollama_behavior_error(call)
        else:
            if not call.model:
                return _openai_error(
                    400, "you must provide a model parameter", "invalid_request_error", param="model"
                )
            error = _openai_behavior_error(call)
        if error is not None:
            return error
    response = route(call)
    if call.behavior == "cut-stream" and response.status == 200:
        response = _cut(response)
    return response
