"""The fake OpenAI API: chat completions, legacy completions, embeddings, models, Responses API."""

from __future__ import annotations

import base64
import struct
from typing import Any

from ._common import (
    _FINGERPRINT,
    _OPENAI_MODELS,
    _REASONING_RE,
    _REQUEST_ID,
    _RETRYABLE,
    CREATED,
    EMBEDDING_DIM,
    REASONING_TOKENS,
    FakeResponse,
    _as_list,
    _Call,
    _json,
    _last_user_text,
    _messages_tokens,
    _reply_tokens,
    _sse,
    _stream,
    _tools_tokens,
    count_tokens,
    fake_embedding,
)

__all__ = []


def _openai_headers(status: int = 200) -> list[tuple[str, str]]:
    headers = [
        ("x-request-id", _REQUEST_ID),
        ("openai-organization", "org-fake"),
        ("openai-processing-ms", "42"),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-limit-tokens", "30000000"),
        ("x-ratelimit-remaining-tokens", "29999000"),
    ]
    if status == 429 or status >= 500:
        headers.extend(_RETRYABLE)
    return headers


def _openai_error(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> FakeResponse:
    obj = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return _json(status, obj, _openai_headers(status), pretty=True)


def _openai_behavior_error(call: _Call) -> FakeResponse | None:
    behavior, model = call.behavior, call.model
    if behavior == "missing-model":
        return _openai_error(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        )
    if behavior == "rate-limited":
        return _openai_error(
            429,
            f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
            "Limit 3, Used 3, Requested 1. Please try again in 20s.",
            "requests",
            "rate_limit_exceeded",
        )
    if behavior == "server-error":
        return _openai_error(
            500, "The server had an error while processing your request. Sorry about that!", "server_error"
        )
    if behavior == "overloaded":
        return _openai_error(
            503, "The engine is currently overloaded, please try again later.", "server_error"
        )
    return None


def _openai_cached(prompt_tokens: int, call: _Call) -> int:
    data = call.data
    wanted = call.headers.get("x-fake-cache", "").lower() == "read" or (
        isinstance(data, dict) and data.get("prompt_cache_key") and call.cache_mode == "read"
    )
    return prompt_tokens // 2 if wanted else 0


def _openai_chat_usage(prompt: int, visible: int, model: str, call: _Call) -> dict[str, Any]:
    reasoning = REASONING_TOKENS if _REASONING_RE.match(model) else 0
    completion = visible + reasoning
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": _openai_cached(prompt, call), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _include_usage(data: dict[str, Any]) -> bool:
    options = data.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _openai_chat(call: _Call) -> FakeResponse:
    data, model = call.data, call.model
    messages = _as_list(data.get("messages"))
    prompt = _messages_tokens(messages) + _tools_tokens(data.get("tools"))
    limit = data.get("max_completion_tokens") or data.get("max_tokens")
    pieces, cut = _reply_tokens(_last_user_text(messages), limit)
    finish = "length" if cut else "stop"
    usage = _openai_chat_usage(prompt, len(pieces), model, call)
    if not data.get("stream"):
        obj = {
            "id": "chatcmpl-fake0001",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(pieces),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
        return _json(200, obj, _openai_headers(), pretty=True)

    with_usage = _include_usage(data)

    def chunk(choices: list[Any], final_usage: dict[str, Any] | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": "chatcmpl-fake0001",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
        }
        if with_usage:
            obj["usage"] = final_usage
        return _sse(obj)

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    chunks = [chunk(choice({"role": "assistant", "content": "", "refusal": None}))]
    chunks += [chunk(choice({"content": piece})) for piece in pieces]
    chunks.append(chunk(choice({}, finish)))
    if with_usage:
        chunks.append(chunk([], usage))
    chunks.append(_sse("[DONE]"))
    return _stream(chunks, _openai_headers(), "text/event-stream; charset=utf-8")


def _openai_completions(call: _Call) -> FakeResponse:
    data, model = call.data, call.model
    prompts = data.get("prompt")
    prompt_list = prompts if isinstance(prompts, list) else [prompts if prompts is not None else ""]
    prompt_text = prompt_list[0] if prompt_list and isinstance(prompt_list[0], str) else ""
    prompt = sum(count_tokens(p) if isinstance(p, str) else len(_as_list(p)) for p in prompt_list)
    limit = data.get("max_tokens", 16)  # the legacy endpoint's default is 16
    pieces, cut = _reply_tokens(prompt_text, limit)
    finish = "length" if cut else "stop"
    usage = {"prompt_tokens": prompt, "completion_tokens": len(pieces), "total_tokens": prompt + len(pieces)}
    base = {"id": "cmpl-fake0001", "object": "text_completion", "created": CREATED, "model": model}
    if not data.get("stream"):
        obj = {
            **base,
            "choices": [{"text": "".join(pieces), "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
            "system_fingerprint": None,
        }
        return _json(200, obj, _openai_headers(), pretty=True)
    with_usage = _include_usage(data)

    def chunk(choices: list[Any], final_usage: dict[str, Any] | None = None) -> bytes:
        obj = {**base, "choices": choices, "system_fingerprint": None}
        if with_usage:
            obj["usage"] = final_usage
        return _sse(obj)

    chunks = [
        chunk([{"text": piece, "index": 0, "logprobs": None, "finish_reason": None}]) for piece in pieces
    ]
    chunks.append(chunk([{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]))
    if with_usage:
        chunks.append(chunk([], usage))
    chunks.append(_sse("[DONE]"))
    return _stream(chunks, _openai_headers(), "text/event-stream; charset=utf-8")


def _embedding_inputs(value: Any) -> list[tuple[str, int]]:
    """(text to embed, token count) per input: strings, token arrays, or lists of either."""
    if isinstance(value, str):
        return [(value, count_tokens(value))]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [(" ".join(map(str, value)), len(value))]
    out: list[tuple[str, int]] = []
    for item in _as_list(value):
        if isinstance(item, str):
            out.append((item, count_tokens(item)))
        elif isinstance(item, list):
            out.append((" ".join(map(str, item)), len(item)))
    return out


def _dimensions(data: dict[str, Any]) -> int:
    dims = data.get("dimensions")
    if isinstance(dims, int) and not isinstance(dims, bool) and 0 < dims <= 4096:
        return dims
    return EMBEDDING_DIM


def _openai_embeddings(call: _Call) -> FakeResponse:
    data = call.data
    inputs = _embedding_inputs(data.get("input"))
    if not inputs:
        return _openai_error(400, "'$.input' is invalid.", "invalid_request_error", param="input")
    dims = _dimensions(data)
    as_base64 = data.get("encoding_format") == "base64"
    items = []
    for index, (text, _) in enumerate(inputs):
        vector = fake_embedding(text, dims)
        embedding: Any = vector
        if as_base64:
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        items.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(n for _, n in inputs)
    obj = {
        "object": "list",
        "data": items,
        "model": call.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return _json(200, obj, _openai_headers(), pretty=True)


def _openai_model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "system"}


def _openai_models(call: _Call) -> FakeResponse:
    obj = {"object": "list", "data": [_openai_model(m) for m in _OPENAI_MODELS]}
    return _json(200, obj, _openai_headers(), pretty=True)


def _responses_input(data: dict[str, Any]) -> tuple[int, str]:
    """(input tokens, last user text) of a Responses API request."""
    raw = data.get("input")
    items: list[Any] = [{"role": "user", "content": raw}] if isinstance(raw, str) else _as_list(raw)
    messages = [i for i in items if isinstance(i, dict)]
    instructions = data.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages = [{"role": "developer", "content": instructions}, *messages]
    tokens = _messages_tokens(messages) + _tools_tokens(data.get("tools"))
    return tokens, _last_user_text(messages)


def _openai_responses(call: _Call) -> FakeResponse:
    data, model = call.data, call.model
    input_tokens, prompt = _responses_input(data)
    pieces, cut = _reply_tokens(prompt, data.get("max_output_tokens"))
    text = "".join(pieces)
    reasoning = REASONING_TOKENS if _REASONING_RE.match(model) else 0
    output_tokens = len(pieces) + reasoning
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": _openai_cached(input_tokens, call)},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    item_status = "incomplete" if cut else "completed"
    item = {
        "id": "msg_fake0001",
        "type": "message",
        "status": item_status,
        "content": [part],
        "role": "assistant",
    }

    def response(status: str, output: list[Any], final_usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": "resp_fake0001",
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if cut and status == "incomplete" else None,
            "instructions": data.get("instructions"),
            "max_output_tokens": data.get("max_output_tokens"),
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": data.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": data.get("store", True),
            "temperature": data.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": data.get("tool_choice", "auto"),
            "tools": data.get("tools", []),
            "top_p": data.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": final_usage,
            "user": None,
            "metadata": data.get("metadata", {}),
        }

    final_status = "incomplete" if cut else "completed"
    if not data.get("stream"):
        return _json(200, response(final_status, [item], usage), _openai_headers(), pretty=True)

    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response("in_progress", [], None)},
        {"type": "response.in_progress", "response": response("in_progress", [], None)},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": "msg_fake0001",
            "output_index": 0,
            "content_index": 0,
            "part": {**part, "text": ""},
        },
    ]
    where = {"item_id": "msg_fake0001", "output_index": 0, "content_index": 0}
    events += [
        {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []} for piece in pieces
    ]
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": f"response.{final_status}", "response": response(final_status, [item], usage)},
    ]
    chunks = [_sse({**event, "sequence_number": n}, event["type"]) for n, event in enumerate(events)]
    return _stream(chunks, _openai_headers(), "text/event-stream; charset=utf-8")
