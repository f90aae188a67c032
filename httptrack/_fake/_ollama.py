"""The fake Ollama native API: chat, generate, embed, embeddings, tags, version."""

from __future__ import annotations

import hashlib
from typing import Any

from ._common import (
    _CREATED_ISO,
    _OLLAMA_MODELS,
    _RETRYABLE,
    FakeResponse,
    _as_list,
    _Call,
    _dumps,
    _json,
    _last_user_text,
    _messages_tokens,
    _reply_tokens,
    _stream,
    _tools_tokens,
    fake_embedding,
)
from ._openai import _dimensions, _embedding_inputs

__all__ = []


_OLLAMA_JSON = "application/json; charset=utf-8"


def _ollama_error(status: int, message: str) -> FakeResponse:
    headers = list(_RETRYABLE) if status == 429 or status >= 500 else []
    return _json(status, {"error": message}, headers, content_type=_OLLAMA_JSON)


def _ollama_behavior_error(call: _Call) -> FakeResponse | None:
    behavior = call.behavior
    if behavior == "missing-model":
        return _ollama_error(404, f'model "{call.model}" not found, try pulling it first')
    if behavior == "rate-limited":
        return _ollama_error(429, "too many requests")
    if behavior == "server-error":
        return _ollama_error(500, "llama runner process has terminated: exit status 2")
    if behavior == "overloaded":
        return _ollama_error(503, "server busy, please try again.  maximum pending requests exceeded")
    return None


def _ollama_stats(prompt: int, output: int) -> dict[str, int]:
    load, prompt_ns, eval_ns = 5_000_000, prompt * 1_000_000, output * 10_000_000
    return {
        "total_duration": load + prompt_ns + eval_ns + 1_000_000,
        "load_duration": load,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": prompt_ns,
        "eval_count": output,
        "eval_duration": eval_ns,
    }


def _ollama_limit(data: dict[str, Any]) -> Any:
    options = data.get("options")
    return options.get("num_predict") if isinstance(options, dict) else None


def _ollama_generation(
    call: _Call, prompt_tokens: int, prompt: str, key: str, *, empty: bool
) -> FakeResponse:
    """Shared by /api/chat (``key="message"``) and /api/generate (``key="response"``)."""
    data, model = call.data, call.model
    base = {"model": model, "created_at": _CREATED_ISO}

    def payload(text: str) -> Any:
        return {"role": "assistant", "content": text} if key == "message" else text

    if empty:  # an empty request only loads the model
        obj = {**base, key: payload(""), "done_reason": "load", "done": True}
        return _json(200, obj, [], content_type=_OLLAMA_JSON)
    pieces, cut = _reply_tokens(prompt, _ollama_limit(data))
    done = {"done_reason": "length" if cut else "stop", "done": True}
    stats = _ollama_stats(prompt_tokens, len(pieces))
    extra = {"context": list(range(1, prompt_tokens + len(pieces) + 1))} if key == "response" else {}
    if data.get("stream") is False:
        obj = {**base, key: payload("".join(pieces)), **done, **extra, **stats}
        return _json(200, obj, [], content_type=_OLLAMA_JSON)
    chunks = [_dumps({**base, key: payload(piece), "done": False}) + b"\n" for piece in pieces]
    chunks.append(_dumps({**base, key: payload(""), **done, **extra, **stats}) + b"\n")
    return _stream(chunks, [], "application/x-ndjson")


def _ollama_chat(call: _Call) -> FakeResponse:
    messages = _as_list(call.data.get("messages"))
    prompt_tokens = _messages_tokens(messages) + _tools_tokens(call.data.get("tools"))
    return _ollama_generation(call, prompt_tokens, _last_user_text(messages), "message", empty=not messages)


def _ollama_generate(call: _Call) -> FakeResponse:
    data = call.data
    prompt = data.get("prompt") if isinstance(data.get("prompt"), str) else ""
    system = data.get("system") if isinstance(data.get("system"), str) else ""
    messages = [{"role": "system", "content": system}] if system else []
    prompt_tokens = _messages_tokens([*messages, {"role": "user", "content": prompt}])
    return _ollama_generation(call, prompt_tokens, prompt, "response", empty=not prompt)


def _ollama_embed(call: _Call) -> FakeResponse:
    data = call.data
    inputs = _embedding_inputs(data.get("input"))
    dims = _dimensions(data)
    tokens = sum(n for _, n in inputs)
    stats = _ollama_stats(tokens, 0)
    obj = {
        "model": call.model,
        "embeddings": [fake_embedding(text, dims) for text, _ in inputs],
        "total_duration": stats["total_duration"],
        "load_duration": stats["load_duration"],
        "prompt_eval_count": tokens,
    }
    return _json(200, obj, [], content_type=_OLLAMA_JSON)


def _ollama_embeddings_legacy(call: _Call) -> FakeResponse:
    prompt = call.data.get("prompt")
    vector = fake_embedding(prompt, _dimensions(call.data)) if isinstance(prompt, str) and prompt else []
    return _json(200, {"embedding": vector}, [], content_type=_OLLAMA_JSON)


def _ollama_tags(call: _Call) -> FakeResponse:
    models = [
        {
            "name": name,
            "model": name,
            "modified_at": _CREATED_ISO,
            "size": size,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": family,
                "families": [family],
                "parameter_size": params,
                "quantization_level": "Q4_K_M" if family == "llama" else "F16",
            },
        }
        for name, family, params, size in _OLLAMA_MODELS
    ]
    return _json(200, {"models": models}, [], content_type=_OLLAMA_JSON)


def _ollama_version(call: _Call) -> FakeResponse:
    return _json(200, {"version": "0.12.0"}, [], content_type=_OLLAMA_JSON)
