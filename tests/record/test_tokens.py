"""Tests for httptrack.record._tokens: shipped encodings, offline loading and prompt estimates.

Reference figures marked "cookbook" are quoted from OpenAI's "How to count tokens with
tiktoken" notebook (openai/openai-cookbook, examples/How_to_count_tokens_with_tiktoken.ipynb,
commit c81359cdc6744f001e40c08a192604c5113fdab3), whose chat figures OpenAI checked against
the API's own ``usage.prompt_tokens``. Every other expected count was derived from the
official encodings (verified by sha256 below); the comments break each one down into the
per-piece token counts it adds up.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from httptrack.record import _tokens as T

REPO = Path(__file__).resolve().parents[2]

# tiktoken 0.14.0, tiktoken_ext/openai_public.py: load_tiktoken_bpe(..., expected_hash=...).
OFFICIAL_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}

# cookbook, section 6: the example conversation.
COOKBOOK_MESSAGES: list[dict[str, str]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]

# cookbook, section 7: the tools example.
COOKBOOK_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]

IMG = T.IMAGE_TOKENS  # 85


@pytest.fixture(scope="module", autouse=True)
def _loaded() -> None:
    """Load both encodings once for the whole module (~1 s)."""
    for name in T.SHIPPED_ENCODINGS:
        T.load_encoding(name)


def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty the encoding cache for one test (restored afterwards)."""
    monkeypatch.setattr(T, "_encodings", {})
    monkeypatch.setattr(T, "_failures", {})


# --------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_shipped_file_is_the_official_encoding(name: str) -> None:
    import tiktoken_ext.openai_public as openai_public  # type: ignore[import-untyped]

    source = inspect.getsource(openai_public)
    pinned = dict(re.findall(r'/encodings/(\w+)\.tiktoken",\s*expected_hash="([0-9a-f]{64})"', source))
    assert pinned[name] == OFFICIAL_SHA256[name]
    data = gzip.decompress((REPO / "httptrack" / "encodings" / f"{name}.tiktoken.gz").read_bytes())
    assert hashlib.sha256(data).hexdigest() == OFFICIAL_SHA256[name]
    assert T.ENCODING_SHA256[name] == OFFICIAL_SHA256[name]


@pytest.mark.parametrize(("name", "n_vocab"), [("o200k_base", 200019), ("cl100k_base", 100277)])
def test_encoding_built_like_tiktoken_builds_it(
    monkeypatch: pytest.MonkeyPatch, name: str, n_vocab: int
) -> None:
    import tiktoken_ext.openai_public as openai_public

    # Run tiktoken's own constructor with the download stubbed out, and compare what it sets.
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: {})
    official = openai_public.ENCODING_CONSTRUCTORS[name]()
    enc = T.load_encoding(name)
    assert enc.name == name
    assert enc.pat_str == official["pat_str"]
    assert enc.special_tokens == official["special_tokens"]
    assert enc.n_vocab == n_vocab


# --------------------------------------------------------------------------- known counts


@pytest.mark.parametrize(
    ("model", "text", "ids"),
    [
        # cookbook, sections 3 and 5 (token integers printed by the notebook)
        ("gpt-4", "tiktoken is great!", [83, 1609, 5963, 374, 2294, 0]),
        ("gpt-4o", "tiktoken is great!", [83, 8251, 2488, 382, 2212, 0]),
        ("gpt-4", "antidisestablishmentarianism", [519, 85342, 34500, 479, 8997, 2191]),
        ("gpt-4o", "antidisestablishmentarianism", [493, 129901, 376, 160388, 21203, 2367]),
        ("gpt-4", "2 + 2 = 4", [17, 489, 220, 17, 284, 220, 19]),
        ("gpt-4o", "2 + 2 = 4", [17, 659, 220, 17, 314, 220, 19]),
        ("gpt-4", "お誕生日おめでとう", [33334, 45918, 243, 21990, 9080, 33334, 62004, 16556, 78699]),
        ("gpt-4o", "お誕生日おめでとう", [8930, 9697, 243, 128225, 8930, 17693, 4344, 48669]),
    ],
)
def test_cookbook_token_ids(model: str, text: str, ids: list[int]) -> None:
    assert T.encoding_for_model(model).encode(text) == ids
    assert T.count_text(text, model) == len(ids)


def test_count_text_basics() -> None:
    assert T.count_text("tiktoken is great!", "gpt-3.5-turbo") == 6  # cookbook
    assert T.count_text("tiktoken is great!") == 6  # default o200k_base; cookbook
    assert T.count_output_text("tiktoken is great!", "gpt-4o-mini") == 6
    assert T.count_text("") == 0
    assert T.count_text(None) == 0  # type: ignore[arg-type]
    assert T.count_output_text(b"bytes", None) == 0  # type: ignore[arg-type]


def test_special_tokens_in_user_text_count_as_plain_text() -> None:
    # "<|endoftext|>" as text: < | end of text | > (derived from the verified encodings)
    assert T.encoding_for_model("gpt-4").encode("<|endoftext|>", disallowed_special=()) == [
        27,
        91,
        8862,
        728,
        428,
        91,
        29,
    ]
    assert T.count_text("<|endoftext|>", "gpt-4") == 7
    assert T.count_text("<|endoftext|>", "gpt-4o") == 7
    assert T.count_text("a <|endofprompt|> b <|fim_prefix|>", "gpt-4") > 3


@pytest.mark.parametrize("model", ["gpt-4", "gpt-4o"])
def test_unicode_round_trip(model: str) -> None:
    text = "héllo wörld — 你好，世界 🌍🚀 עִבְרִית Ελληνικά 👩‍👩‍👧 ∑x² \x00\t\r\n  end"
    enc = T.encoding_for_model(model)
    ids = enc.encode(text)
    tokens = {rank: token for token, rank in T._read_ranks(enc.name).items()}
    assert b"".join(tokens[i] for i in ids) == text.encode("utf-8")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # cookbook, section 6: 129 for gpt-3.5-turbo(-0613/-0125) and gpt-4(-0613), 124 for gpt-4o(-mini)
        ("gpt-3.5-turbo-0613", 129),
        ("gpt-3.5-turbo", 129),
        ("gpt-4-0613", 129),
        ("gpt-4", 129),
        ("gpt-4o", 124),
        ("gpt-4o-mini", 124),
        ("gpt-4o-2024-08-06", 124),
        ("gpt-4o-mini-2024-07-18", 124),
    ],
)
def test_cookbook_chat_counts(model: str, expected: int) -> None:
    assert T.count_chat_messages(COOKBOOK_MESSAGES, model) == expected
    body = {"model": model, "messages": COOKBOOK_MESSAGES}
    assert T.estimate_prompt_tokens("openai", "chat", body, None) == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    # cookbook, section 7: 105 for gpt-3.5-turbo and gpt-4, 101 for gpt-4o and gpt-4o-mini
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_cookbook_tool_counts(model: str, expected: int) -> None:
    assert (
        T.count_chat_messages(COOKBOOK_TOOL_MESSAGES, model) + T.count_tools(COOKBOOK_TOOLS, model)
        == expected
    )
    body = {"model": model, "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert T.estimate_prompt_tokens("openai", "chat", body, None) == expected
    # the same definitions in the legacy `functions` shape
    legacy = {
        "model": model,
        "messages": COOKBOOK_TOOL_MESSAGES,
        "functions": [COOKBOOK_TOOLS[0]["function"]],
    }
    assert T.estimate_prompt_tokens("openai", "chat", legacy, None) == expected


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5.5", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-oss-120b", "o200k_base"),  # o200k_harmony: same ranks
        ("ft:gpt-4o-mini:org::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-3-large", "cl100k_base"),
        ("openai/gpt-4", "cl100k_base"),
        ("GPT-4", "cl100k_base"),
        ("text-davinci-003", "cl100k_base"),  # p50k_base is not shipped
        ("claude-sonnet-4-5", "o200k_base"),
        ("gemini-2.5-flash", "o200k_base"),
        ("models/gemini-2.0-flash", "o200k_base"),
        ("llama3.2:latest", "o200k_base"),
        ("", "o200k_base"),
        (None, "o200k_base"),
        (["gpt-4"], "o200k_base"),  # not a string (unhashable, too)
    ],
)
def test_encoding_for_model(model: Any, encoding: str) -> None:
    assert T.encoding_name_for_model(model) == encoding
    assert T.encoding_for_model(model).name == encoding


# --------------------------------------------------------------------------- loading


def _deny(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("network access attempted")


def test_loading_never_touches_the_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tiktoken
    import tiktoken.load
    import tiktoken.registry

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", _deny)
    monkeypatch.setattr(socket, "create_connection", _deny)
    monkeypatch.setattr(socket, "getaddrinfo", _deny)
    monkeypatch.setattr(urllib.request, "urlopen", _deny)
    monkeypatch.setattr(tiktoken.load, "read_file", _deny)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", _deny)
    monkeypatch.setattr(tiktoken.registry, "get_encoding", _deny)
    monkeypatch.setattr(tiktoken, "get_encoding", _deny)
    try:
        import requests
    except ImportError:  # pragma: no cover
        pass
    else:
        monkeypatch.setattr(requests, "get", _deny)
        monkeypatch.setattr(requests.Session, "request", _deny)
    _fresh_state(monkeypatch)
    assert T.count_text("tiktoken is great!", "gpt-4") == 6
    assert T.count_chat_messages(COOKBOOK_MESSAGES, "gpt-4-0613") == 129
    assert list(tmp_path.iterdir()) == []


def test_fresh_process_is_lazy_and_offline(tmp_path: Path) -> None:
    script = f"""
import os, socket, sys
def deny(*a, **k):
    raise AssertionError("network access attempted")
socket.socket.connect = deny
socket.create_connection = deny
socket.getaddrinfo = deny
import httptrack
before = "tiktoken" in sys.modules
from httptrack.record import _tokens
assert before or "tiktoken" not in sys.modules, "importing httptrack.record._tokens imported tiktoken"
import tiktoken, tiktoken.load
tiktoken.load.read_file = tiktoken.load.read_file_cached = tiktoken.get_encoding = deny
print(_tokens.count_text("tiktoken is great!", "gpt-4o"), _tokens.count_text("tiktoken is great!", "gpt-4"))
assert os.listdir({str(tmp_path)!r}) == []
"""
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6", "6"]


def test_load_is_thread_safe_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh_state(monkeypatch)
    calls: list[str] = []
    sentinel = object()

    def slow_build(name: str) -> object:
        calls.append(name)
        time.sleep(0.05)
        return sentinel

    monkeypatch.setattr(T, "_build_encoding", slow_build)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(T.load_encoding("o200k_base"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["o200k_base"]
    assert results == [sentinel] * 8


def test_corrupt_or_missing_file_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fresh_state(monkeypatch)
    monkeypatch.setattr(T, "_ENCODINGS_DIR", tmp_path)
    (tmp_path / "o200k_base.tiktoken.gz").write_bytes(gzip.compress(b"aGVsbG8= 0\n"))
    with pytest.raises(T.EncodingDataError, match="not the official o200k_base") as first:
        T.load_encoding("o200k_base")
    with pytest.raises(T.EncodingDataError) as second:
        T.count_text("hello", "gpt-4o")
    assert second.value is first.value  # remembered, not re-read
    assert (
        T.estimate_prompt_tokens("openai", "chat", {"messages": [{"role": "user", "content": "hi"}]}, None)
        is None
    )
    errors = [r for r in caplog.records if r.name == "httptrack.record._tokens" and r.levelname != "DEBUG"]
    assert [r.levelname for r in errors] == ["ERROR"]  # logged once
    with pytest.raises(T.EncodingDataError, match="cannot be read"):
        T.load_encoding("cl100k_base")  # no file at all
    with pytest.raises(KeyError):
        T.load_encoding("p50k_base")


# --------------------------------------------------------------------------- request shapes


def test_openai_chat_parts_images_and_tool_calls() -> None:
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},  # 3 + system 1 + 4 = 8
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            },  # 3 + user 1 + 6 + image 85 = 95
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },  # 3 + assistant 1 + get_weather 2 + arguments 5 = 11
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},  # 3 + tool 1 + 5 = 9
        ],
    }
    assert T.estimate_prompt_tokens("openai", "chat", body, None) == 8 + (95 - 85 + IMG) + 11 + 9 + 3 == 126
    assert T.count_chat_messages(body["messages"], "gpt-4o") == 126


def test_openai_legacy_completions() -> None:
    model = "gpt-3.5-turbo-instruct"  # cl100k_base
    est = T.estimate_prompt_tokens
    assert est("openai", "completion", {"model": model, "prompt": "Once upon a time"}, None) == 4
    assert (
        est("openai", "completion", {"model": model, "prompt": ["Once upon a time", "The end"]}, None)
        == 4 + 2
    )
    assert est("openai", "completion", {"model": model, "prompt": [1, 2, 3]}, None) == 3  # token ids
    assert est("openai", "completion", {"model": model, "prompt": [[1, 2], [3, 4, 5]]}, None) == 5
    assert (
        est("openai", "completion", {"model": model, "prompt": "Once upon a time", "suffix": "The end"}, None)
        == 6
    )


def test_openai_embeddings() -> None:
    model = "text-embedding-3-small"  # cl100k_base
    est = T.estimate_prompt_tokens
    assert est("openai", "embeddings", {"model": model, "input": "Hello world"}, None) == 2
    assert est("openai", "embeddings", {"model": model, "input": ["Hello world", "Bonjour"]}, None) == 2 + 1
    assert est("openai", "embeddings", {"model": model, "input": [15339, 1917]}, None) == 2
    assert est("openai", "embeddings", {"model": model, "input": [[15339, 1917], [33]]}, None) == 3
    assert est("openai", "other", {"model": model, "input": "Hello world"}, None) == 2  # moderations etc.


def test_openai_responses_api() -> None:
    est = T.estimate_prompt_tokens
    # a string input is one user message: 3 + user 1 + "Tell me a joke" 4, +3 priming
    assert est("openai", "chat", {"model": "gpt-4.1", "input": "Tell me a joke"}, None) == 11
    body = {
        "model": "gpt-4.1",
        "instructions": "Be brief.",  # developer message: 3 + developer 1 + 3 = 7
        "input": [
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "Why is the sky blue?"}],
            },  # 3+1+6 = 10
        ],
    }
    assert est("openai", "chat", body, None) == 7 + 10 + 3
    assert est("openai", "other", body, None) == 20  # `instructions` marks it as Responses
    tool_loop = {
        "model": "gpt-4.1",
        "input": [
            {"role": "user", "content": "Paris weather?"},  # 3 + 1 + 3 = 7
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            # ^ 3 + 2 + 5 = 10
            {"type": "function_call_output", "call_id": "c1", "output": "Sunny, 21 C"},  # 3 + 5 = 8
            {"type": "reasoning", "id": "rs_1", "summary": []},  # not counted
            {"type": "input_image", "image_url": "https://example.invalid/x.png"},  # no role: skipped
        ],
        "tools": [{"type": "web_search"}],  # built-in tool: nothing to count
    }
    assert est("openai", "", tool_loop, None) == 7 + 10 + 8 + 3
    flat_tools = {
        "model": "gpt-4o",
        "input": "Tell me a joke",
        "tools": [{"type": "function", **COOKBOOK_TOOLS[0]["function"]}],
    }
    assert est("openai", "chat", flat_tools, None) == 11 + T.count_tools(COOKBOOK_TOOLS, "gpt-4o")


def test_anthropic_messages() -> None:
    est = T.estimate_prompt_tokens
    simple = {
        "model": "claude-sonnet-4-5",  # o200k_base stands in; text only, no framing
        "system": "You are terse.",  # 4
        "messages": [
            {"role": "user", "content": "Hello world"},
            {"role": "assistant", "content": "Hi"},
        ],  # 2 + 1
    }
    assert est("anthropic", "chat", simple, None) == 7
    blocks = {
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],  # 4
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},  # 6
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "thinking",
                        "thinking": "Previous-turn thinking is not billed.",
                        "signature": "x",
                    },
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],  # get_weather 2 + {"city":"Paris"} 5
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "Sunny, 21 C"}],
                    }
                ],  # 5
            },
        ],
        "tools": [
            {
                "name": "get_weather",  # 2
                "description": "Paris weather?",  # 3
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},  # 14 as JSON
            }
        ],
    }
    assert est("anthropic", "chat", blocks, None) == 4 + 6 + IMG + 2 + 5 + 5 + (2 + 3 + 14)
    assert est("anthropic", "chat", {"messages": [{"role": "user", "content": "Say hi"}]}, None) == 2


def test_ollama_chat_and_generate() -> None:
    est = T.estimate_prompt_tokens
    chat = {
        "model": "llama3.2",
        "messages": [
            {"role": "user", "content": "Paris weather?", "images": ["iVBORw0KGgo="]},  # 3 + 1 + 3 + 85 = 92
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
            },  # 3 + 1 + 0 + 2 + 5 = 11
            {"role": "tool", "content": "Sunny, 21 C"},  # 3 + 1 + 5 = 9
        ],
        "stream": False,
    }
    assert est("ollama", "chat", chat, None) == (7 + IMG) + 11 + 9 + 3
    generate = {"model": "llama3.2", "prompt": "Why is the sky blue?", "system": "Be brief."}  # 6 + 3
    assert est("ollama", "completion", generate, None) == 9
    assert est("ollama", "completion", {**generate, "images": ["iVBORw0KGgo="]}, None) == 9 + IMG
    assert (
        est("ollama", "embeddings", {"model": "nomic-embed-text", "input": ["Hello world", "Hi"]}, None) == 3
    )


def test_gemini_generate_content() -> None:
    est = T.estimate_prompt_tokens
    body = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},  # 3
        "contents": [
            {"role": "user", "parts": [{"text": "Why is the sky blue?"}]},  # 6
            {"role": "model", "parts": [{"text": "Hello world"}]},  # 2
            {
                "role": "user",
                "parts": [
                    {"text": "What is in this image?"},  # 6
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},  # 85
                    {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}},  # not counted
                ],
            },
        ],
    }
    assert est("gemini", "chat", body, None) == 3 + 6 + 2 + 6 + IMG
    calls = {
        "system_instruction": {"parts": [{"text": "Be brief."}]},  # 3
        "contents": [
            {
                "role": "model",
                "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
            },
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "get_weather", "response": {"city": "Paris"}}}],
            },
        ],  # (2 + 5) + (2 + 5)
    }
    assert est("google", "chat", calls, None) == 3 + 14
    embed = {"content": {"parts": [{"text": "Hello world"}]}}
    assert est("gemini", "embeddings", embed, None) == 2
    batch = {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "Hi"}]}}] * 2}
    assert est("gemini", "embeddings", batch, None) == 2


def test_explicit_model_overrides_body_model() -> None:
    body = {"model": "gpt-4o", "messages": COOKBOOK_MESSAGES}
    assert T.estimate_prompt_tokens("openai", "chat", body, "gpt-4-0613") == 129


# --------------------------------------------------------------------------- odd shapes


@pytest.mark.parametrize(
    "body",
    [
        None,
        "just a string",
        b"bytes",
        42,
        [],
        [{"role": "user", "content": "hi"}],
        {},
        {"model": "gpt-4o"},
        {"messages": []},
        {"messages": "hello"},
        {"messages": [None, 1, "x", []]},
        {"input": None},
        {"input": [{"no": "text"}], "model": 5},
        {"prompt": 5},
        {"prompt": [None, {"a": 1}]},
        {"contents": []},
        {"contents": [{"parts": 5}, {"parts": [None, {"inlineData": {"mimeType": "audio/mp3"}}]}]},
        {"system": 3, "messages": 4},
    ],
)
def test_nothing_countable_is_none(body: object) -> None:
    assert T.estimate_prompt_tokens("openai", "chat", body, None) is None


def _deep(depth: int) -> Any:
    value: Any = "Hi"
    for _ in range(depth):
        value = [value, {"type": "tool_result", "content": value}]
    return value


def _deep_dict(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("provider", "operation", "body"),
    [
        (
            "openai",
            "chat",
            {"messages": [{"role": 1, "content": {"type": 2}, "name": [], "tool_calls": "x"}]},
        ),
        (
            "openai",
            "chat",
            {"messages": [{"content": [None, 5, {"type": None}, {"text": 7}, {"type": "file"}]}]},
        ),
        (
            "openai",
            "chat",
            {"messages": [{"tool_calls": [None, {"function": "x"}, {"function": {"name": 1}}]}]},
        ),
        (
            "openai",
            "chat",
            {"messages": [{"role": "user", "content": "Hi"}], "tools": [None, {"function": 3}]},
        ),
        (
            "openai",
            "chat",
            {"messages": [{"role": "user", "content": "Hi"}], "tools": [{"name": "f", "parameters": []}]},
        ),
        (
            "openai",
            "chat",
            {
                "tools": [
                    {
                        "name": "f",
                        "parameters": {"properties": {"p": None, "q": {"enum": [1, None], "type": ["a"]}}},
                    }
                ]
            },
        ),
        ("openai", "chat", {"messages": [{"role": "user", "content": _deep(3000)}]}),
        ("anthropic", "chat", {"messages": [{"content": [{"type": "tool_use", "input": _deep_dict(5000)}]}]}),
        ("anthropic", "chat", {"system": [None, {"type": "document", "source": "x"}], "messages": [1]}),
        (
            "gemini",
            "chat",
            {"contents": [{"parts": [{"functionCall": "x"}, {"inlineData": {"mimeType": 3}}]}]},
        ),
        ("gemini", "chat", {"contents": "Hello world"}),
        ("openai", "chat", {"input": [1, "Hi", {"type": "function_call", "arguments": {"a": object()}}]}),
        ("openai", "embeddings", {"input": [[1, 2], "Hi", [True, False], 3.5]}),
        (None, None, {"messages": [{"role": "user", "content": "Hi"}]}),
        ("OpenAI", "CHAT", {"model": ["gpt-4"], "messages": [{"role": "user", "content": "Hi"}]}),
        (
            "openai",
            "chat",
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "\udcff lone surrogate"}]},
        ),
    ],
)
def test_odd_shapes_never_raise(provider: Any, operation: Any, body: object) -> None:
    result = T.estimate_prompt_tokens(provider, operation, body, None)
    assert result is None or (isinstance(result, int) and result >= 0)


def test_count_chat_messages_odd_shapes() -> None:
    assert T.count_chat_messages("hi") == 0  # type: ignore[arg-type]
    assert T.count_chat_messages(None) == 0  # type: ignore[arg-type]
    assert T.count_chat_messages([]) == 0
    assert T.count_chat_messages([1, "x", None]) == 0
    # nothing readable but it is a message: 3 per message + 3 priming
    weird = [{"role": 5, "content": {"weird": True}, "name": ["x"], "tool_calls": "nope", "function_call": 3}]
    assert T.count_chat_messages(weird) == 6
    # readable parts only: 3 + user 1 + "Hi" 1 + "Hello world" 2, +3 priming
    parts = [
        None,
        5,
        {"type": "text"},
        {"type": "text", "text": "Hi"},
        {"type": "input_audio"},
        "Hello world",
    ]
    assert T.count_chat_messages([{"role": "user", "content": parts}], "gpt-4o") == 10
