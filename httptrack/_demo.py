"""``httptrack demo``: a few OpenAI-, Anthropic- and Ollama-shaped calls against the
built-in fake provider (in-process: no API key, no network), recorded like real ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._context import attribute
from ._fake import mock_transport
from ._transport import TrackingTransport
from .record._writer import flush

__all__ = ["run_demo"]

OPENAI = "https://api.openai.com/v1"
ANTHROPIC = "https://api.anthropic.com/v1"
OLLAMA = "http://localhost:11434/api"

_ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-demo-not-a-real-key", "anthropic-version": "2023-06-01"}
_OPENAI_HEADERS = {"authorization": "Bearer sk-demo-not-a-real-key"}


def run_demo(db: Path, *, echo: Callable[[str], Any] = print, cache_dir: Path | None = None) -> int:
    """Make the demo calls, recording into ``db``. Returns how many calls were made."""
    import httpx
    import httpx2

    made = 0

    def step(text: str) -> None:
        nonlocal made
        made += 1
        echo(f"  {made}. {text}")

    options: dict[str, Any] = {"db": db, "cache": "on" if cache_dir else "off"}
    if cache_dir is not None:
        options["cache_dir"] = cache_dir
    # The SDKs of OpenAI and Anthropic use httpx2; Ollama's uses httpx. So does the demo.
    openai = httpx2.Client(
        transport=TrackingTransport(mock_transport(httpx2), **options), headers=_OPENAI_HEADERS
    )
    anthropic = httpx2.Client(
        transport=TrackingTransport(mock_transport(httpx2), **options), headers=_ANTHROPIC_HEADERS
    )
    ollama = httpx.Client(transport=TrackingTransport(mock_transport(httpx), **options))
    question = [{"role": "user", "content": "What is the capital of France?"}]
    with openai, anthropic, ollama:
        with attribute(user="alice", service="demo"):
            openai.post(f"{OPENAI}/chat/completions", json={"model": "gpt-4o-mini", "messages": question})
            step("OpenAI chat completion (gpt-4o-mini), attributed to alice/demo")
            with openai.stream(
                "POST",
                f"{OPENAI}/chat/completions",
                json={
                    "model": "gpt-4o-mini",
                    "messages": question,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            ) as reply:
                for _ in reply.iter_lines():
                    pass
            step("OpenAI chat completion, streamed (SSE) with its usage chunk")
        with attribute(user="bob", service="demo"):
            long_system = [
                {
                    "type": "text",
                    "text": "You are a geography tutor. " * 200,
                    "cache_control": {"type": "ephemeral"},
                }
            ]
            anthropic.post(
                f"{ANTHROPIC}/messages",
                json={
                    "model": "claude-sonnet-4-6",
                    "max_tokens": 200,
                    "system": long_system,
                    "messages": question,
                },
                headers={"x-fake-cache": "read"},
            )
            step("Anthropic message (claude-sonnet-4-6) reading a cached prompt: cache reads priced apart")
            with anthropic.stream(
                "POST",
                f"{ANTHROPIC}/messages",
                json={"model": "claude-haiku-4-5", "max_tokens": 200, "messages": question, "stream": True},
            ) as reply:
                for _ in reply.iter_lines():
                    pass
            step("Anthropic message, streamed (message_start + message_delta usage)")
        with attribute(user="carol", service="demo"):
            with ollama.stream(
                "POST", f"{OLLAMA}/chat", json={"model": "llama3.2", "messages": question}
            ) as lines:
                for _ in lines.iter_lines():
                    pass
            step("Ollama chat on localhost, streamed (NDJSON): local models cost $0")
            ollama.post(f"{OLLAMA}/embed", json={"model": "nomic-embed-text", "input": ["Paris", "France"]})
            step("Ollama embeddings")
        openai.post(f"{OPENAI}/chat/completions", json={"model": "missing-model", "messages": question})
        step("OpenAI error: a model that does not exist (404, recorded with its error code)")
        if cache_dir is not None:
            flush()  # the first answer is stored in the cache by the background writer
            with attribute(user="alice", service="demo"):
                reply = openai.post(
                    f"{OPENAI}/chat/completions", json={"model": "gpt-4o-mini", "messages": question}
                )
            step(f"The first question again: X-Httptrack-Cache: {reply.headers.get('x-httptrack-cache')}, "
                 "answered locally, nothing sent, nothing spent")  # fmt: skip
    flush()
    return made
