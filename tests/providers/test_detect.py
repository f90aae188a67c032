"""LLM calls recognised by their shape on hosts no family names, with no ``HTTPTRACK_HOSTS``:
an OpenAI-compatible server on an arbitrary port (the built-in fake provider over a real
socket, a MockTransport on an odd host) through httpx and httpx2 and the SDKs, with exact
figures; ordinary traffic on the same hosts untracked; ``HTTPTRACK_DETECT=off``; the
well-known clouds named by host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import ollama
import openai
import pytest
from helpers import genai_price, read_rows

import httptrack
from httptrack._fake import FakeProviderServer, mock_transport
from httptrack.providers import provider_for_host, provider_for_shape
from httptrack.providers._detect import shape_of

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/chat/completions", "openai"),
        ("/chat/completions", "openai"),  # llama.cpp's server, a base_url without /v1
        ("/openai/v1/chat/completions", "openai"),
        ("/api/v1/chat/completions", "openai"),  # OpenRouter's layout
        ("/api/paas/v4/chat/completions", "openai"),  # Z.ai's
        ("/proxy/team-a/v1/embeddings", "openai"),
        ("/v1/completions", "openai"),
        ("/v1/responses", "openai"),
        ("/v1/moderations", "openai"),
        ("/v1/audio/transcriptions", "openai"),
        ("/v1/audio/speech", "openai"),
        ("/v1/images/generations", "openai"),
        ("/v1/chat/completions/", "openai"),
        ("/v1/messages", "anthropic"),
        ("/anthropic/v1/messages/count_tokens", "anthropic"),
        ("/v1beta/models/gemini-2.0-flash:generateContent", "gemini"),
        ("/v1beta/models/gemini-2.0-flash:streamGenerateContent", "gemini"),
        ("/api/chat", "ollama"),
        ("/api/generate", "ollama"),
        ("/api/embed", "ollama"),
        ("/api/embeddings", "ollama"),
        ("/v1/chat", "cohere"),
        ("/v2/chat", "cohere"),
        ("/v2/embed", "cohere"),
        ("/v1/rerank", "cohere"),
        ("/v2/rerank", "cohere"),
        # Ordinary traffic.
        ("/", None),
        ("/health", None),
        ("/v1/models", None),
        ("/api/users", None),
        ("/survey/responses", None),  # no version segment before it: not OpenAI's
        ("/completions", None),
        ("/v1/chat/completions/abc/cancel", None),
        ("/v1/messages/abc", None),
        ("/api/chat/history", None),
        ("/graphql", None),
    ],
)
def test_shape_of_path(path: str, shape: str | None) -> None:
    assert shape_of(path) == shape


def test_known_hosts_come_first_and_other_methods_are_not_shapes() -> None:
    assert provider_for_host("api.openai.com", None) is not None
    assert provider_for_shape("/health") is None
    local = provider_for_shape("/v1/chat/completions", "127.0.0.1")
    remote = provider_for_shape("/v1/chat/completions", "llm.example.net")
    assert local is not None and remote is not None
    assert local.name == remote.name == "openai_compatible"
    # A server on this machine is asked for a stream's usage; one elsewhere is not.
    assert local.include_usage("/v1/chat/completions", "")
    assert not remote.include_usage("/v1/chat/completions", "")


# -- the built-in fake provider on a random port, over a real socket ------------------------


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_an_openai_compatible_server_on_any_port_is_tracked_exactly(lib: Any, db: Path) -> None:
    with FakeProviderServer() as server:
        transport = httptrack.TrackingTransport(db=db, cache=False)
        with lib.Client(transport=transport) as client:
            plain = client.post(
                f"{server.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": QUESTION}
            ).json()
            with client.stream(
                "POST",
                f"{server.url}/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": QUESTION, "stream": True},
            ) as response:
                events = [line for line in response.iter_lines() if line.startswith("data: {")]
            assert client.get(f"{server.url}/v1/models").status_code == 200  # not an LLM call
            assert client.post(f"{server.url}/api/users", json={}).status_code == 404  # nor this
        transport.close()
        host = f"127.0.0.1:{server.port}"
    # The usage chunk httptrack asked for is kept from the app, which did not ask for it.
    assert not [e for e in events if '"choices":[]' in e or '"choices": []' in e]
    rows = read_rows(db)
    assert [(r["provider"], r["host"], r["endpoint"], r["stream"]) for r in rows] == [
        ("openai_compatible", host, "/v1/chat/completions", 0),
        ("openai_compatible", host, "/v1/chat/completions", 1),
    ]
    usage = plain["usage"]
    for row in rows:
        assert (row["input_tokens"], row["output_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        assert row["tokens_estimated"] == 0 and row["status"] == "success"
        assert row["cost_usd"] == pytest.approx(
            genai_price(
                "openai", "gpt-4o-mini", input_tokens=row["input_tokens"], output_tokens=row["output_tokens"]
            ),
            rel=1e-12,
        )


def test_the_sdks_against_the_fake_on_a_random_port(db: Path) -> None:
    """The openai, anthropic and ollama SDKs pointed at a local base_url, as a new user
    would: every call has its row, with the figures the SDK reported."""
    with FakeProviderServer() as server:
        transport = httptrack.TrackingTransport(db=db, cache=False)
        oa = openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="k", http_client=httpx2.Client(transport=transport)
        )
        chat = oa.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)  # type: ignore[arg-type]
        stream = list(oa.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True))  # type: ignore[arg-type]
        embedded = oa.embeddings.create(model="text-embedding-3-small", input="hello")
        an = anthropic.Anthropic(
            base_url=server.url, api_key="k", http_client=httpx2.Client(transport=transport)
        )
        message = an.messages.create(model="claude-3-5-haiku-latest", max_tokens=50, messages=QUESTION)  # type: ignore[arg-type]
        ol = ollama.Client(host=server.url, transport=transport)
        answered = ol.chat(model="llama3.2", messages=QUESTION)
        transport.close()
    assert all(c.usage is None for c in stream)  # the app did not ask for usage: it sees none
    rows = read_rows(db)
    got = [
        (r["provider"], r["operation"], r["input_tokens"], r["output_tokens"], r["tokens_estimated"])
        for r in rows
    ]
    assert chat.usage is not None
    assert got == [
        ("openai_compatible", "chat", chat.usage.prompt_tokens, chat.usage.completion_tokens, 0),
        ("openai_compatible", "chat", chat.usage.prompt_tokens, chat.usage.completion_tokens, 0),
        ("openai_compatible", "embeddings", embedded.usage.prompt_tokens, None, 0),
        ("anthropic_compatible", "chat", message.usage.input_tokens, message.usage.output_tokens, 0),
        ("ollama", "chat", answered.prompt_eval_count, answered.eval_count, 0),
    ]


# -- a MockTransport on an odd host -----------------------------------------------------------


def completion(lib: Any) -> Any:
    def handler(request: Any) -> Any:
        if request.url.path.endswith("/chat/completions"):
            body = {
                "id": "c1",
                "object": "chat.completion",
                "model": "Qwen/Qwen2.5-7B-Instruct",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Paris."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20},
            }
            return lib.Response(200, json=body)
        return lib.Response(200, json={"status": "ok"})

    return handler


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_an_odd_host_is_tracked_and_its_other_traffic_is_not(lib: Any, db: Path) -> None:
    transport = httptrack.TrackingTransport(lib.MockTransport(completion(lib)), db=db, cache=False)
    base = "http://gpu-box.lab.internal:8123/proxy/v1"
    with lib.Client(transport=transport) as client:
        client.post(
            f"{base}/chat/completions", json={"model": "Qwen/Qwen2.5-7B-Instruct", "messages": QUESTION}
        )
        client.get(f"{base}/models")
        client.post("http://gpu-box.lab.internal:8123/metrics", json={"a": 1})
        client.get(f"{base}/chat/completions")  # not a POST: not a call
    transport.close()
    (row,) = read_rows(db)
    assert (row["provider"], row["host"], row["endpoint"]) == (
        "openai_compatible",
        "gpu-box.lab.internal:8123",
        "/proxy/v1/chat/completions",
    )
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"], row["tokens_estimated"]) == (
        17,
        3,
        20,
        0,
    )


def test_a_vllm_style_local_base_url_through_the_openai_sdk(db: Path) -> None:
    """``OpenAI(base_url="http://localhost:8000/v1")``, llama.cpp's ``:8080`` without ``/v1``:
    rows, with no configuration."""
    transport = httptrack.TrackingTransport(httpx2.MockTransport(completion(httpx2)), db=db, cache=False)
    for base_url in ("http://localhost:8000/v1", "http://127.0.0.1:8080"):
        client = openai.OpenAI(
            base_url=base_url, api_key="none", http_client=httpx2.Client(transport=transport)
        )
        client.chat.completions.create(model="Qwen/Qwen2.5-7B-Instruct", messages=QUESTION)  # type: ignore[arg-type]
        client.models.list()
    transport.close()
    rows = read_rows(db)
    assert [(r["host"], r["endpoint"], r["input_tokens"]) for r in rows] == [
        ("localhost:8000", "/v1/chat/completions", 17),
        ("127.0.0.1:8080", "/chat/completions", 17),
    ]


def test_detect_off_and_hosts_override(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://gpu-box:8000/v1/chat/completions"
    payload = {"model": "m", "messages": QUESTION}
    monkeypatch.setenv("HTTPTRACK_DETECT", "off")
    off = httptrack.TrackingTransport(httpx2.MockTransport(completion(httpx2)), db=db, cache=False)
    with httpx2.Client(transport=off) as client:
        client.post(url, json=payload)
    assert read_rows(db) == []
    mapped = httptrack.TrackingTransport(
        httpx2.MockTransport(completion(httpx2)), db=db, cache=False, hosts={"gpu-box:8000": "vllm"}
    )
    with httpx2.Client(transport=mapped) as client:
        client.post(url, json=payload)  # HTTPTRACK_HOSTS still names it, detection off or not
    monkeypatch.delenv("HTTPTRACK_DETECT")
    with httpx2.Client(
        transport=httptrack.TrackingTransport(mock_transport(httpx2), db=db, cache=False, detect=False)
    ) as client:
        client.post(url, json=payload)
    assert [r["provider"] for r in read_rows(db)] == ["vllm"]


@pytest.mark.parametrize(
    ("url", "provider", "model", "priced_as"),
    [
        ("https://api.cerebras.ai/v1/chat/completions", "cerebras", "llama3.1-8b", "cerebras"),
        ("https://api.z.ai/api/paas/v4/chat/completions", "zai", "glm-4.5", "zai"),
        ("https://api.moonshot.ai/v1/chat/completions", "moonshotai", "kimi-k2-0905-preview", "moonshotai"),
        ("https://api.novita.ai/v3/openai/chat/completions", "novita", "deepseek/deepseek-r1-0528", "novita"),
        (
            "https://router.huggingface.co/v1/chat/completions",
            "huggingface",
            "Qwen/Qwen2.5-7B-Instruct",
            None,
        ),
        (
            "https://api.deepinfra.com/v1/openai/chat/completions",
            "deepinfra",
            "meta-llama/Llama-3.3-70B-Instruct",
            None,
        ),
    ],
)
def test_well_known_clouds_are_named_by_host(
    url: str, provider: str, model: str, priced_as: str | None, db: Path
) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
        choice = {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
        return httpx2.Response(200, json={"id": "c", "model": model, "choices": [choice], "usage": usage})

    transport = httptrack.TrackingTransport(httpx2.MockTransport(handler), db=db, cache=False)
    with httpx2.Client(transport=transport) as client:
        client.post(url, content=json.dumps({"model": model, "messages": QUESTION}))
        client.get(url.rsplit("/chat/", 1)[0] + "/models")  # every path on a known host is tracked
    transport.close()
    row, listing = read_rows(db)
    assert (row["provider"], row["input_tokens"], row["output_tokens"]) == (provider, 1000, 100)
    assert (listing["provider"], listing["operation"]) == (provider, "models")
    if priced_as is not None:
        assert row["cost_usd"] == pytest.approx(
            genai_price(priced_as, model, input_tokens=1000, output_tokens=100), rel=1e-12
        )
