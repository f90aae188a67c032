"""Provider payloads the benchmarks share."""

from __future__ import annotations

import json
from typing import Any


def openai_chat_stream(words: list[str], completion_tokens: int | None = None) -> list[bytes]:
    """An OpenAI chat completion stream as its chunks (one SSE event each): the role, one
    chunk per word, the finish reason, the usage chunk and ``[DONE]``."""
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": "gpt-4o-mini",
    }

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"

    completion = len(words) if completion_tokens is None else completion_tokens
    chunks = [event({"role": "assistant", "content": ""})]
    chunks += [event({"content": word}) for word in words]
    chunks.append(event({}, "stop"))
    usage = {"prompt_tokens": 14, "completion_tokens": completion, "total_tokens": 14 + completion}
    chunks.append(b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n")
    chunks.append(b"data: [DONE]\n\n")
    return chunks


#: A non-streaming OpenAI chat completion, as the API returns it.
OPENAI_CHAT_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1735689600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "The capital of France is Paris.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 14,
            "completion_tokens": 7,
            "total_tokens": 21,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "system_fingerprint": "fp_bench",
    }
).encode()
