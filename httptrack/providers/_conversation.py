"""A request body read as a conversation, and a response body's tool calls, for people to
read (the datasette call page). Read by shape, across the families: the message lists of
chat completions, Anthropic's messages, Ollama's chat, the Responses API's input items,
Gemini's contents, a prompt, an embedding's input. It lives here because those shapes are
wire details (only ``providers/`` names them). Anything else is left to the raw body the
page shows below; nothing here raises on an odd body."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Message", "Part", "request_conversation", "response_tool_calls", "tool_names"]

#: How roles are shown: Gemini's ``model`` is the assistant.
_ROLES = {"model": "assistant", "human": "user", "ai": "assistant", "function": "tool"}


@dataclass
class Part:
    """One piece of a message: ``text``, ``tool_call`` (``name``, ``text`` = its
    arguments), ``tool_result`` (``name`` = the call it answers, ``text``), ``image``,
    ``thinking``, or ``other`` (``text`` = the JSON)."""

    kind: str
    text: str = ""
    name: str = ""
    raw: str = ""
    """A tool call's name and arguments as the body has them (the recorded response text
    holds them so)."""


@dataclass
class Message:
    role: str
    parts: list[Part] = field(default_factory=list)


def _object(body: str | None) -> dict[str, Any] | None:
    """A stored body as a JSON object; ``None`` when it is none (empty, not JSON, or nested
    too deeply to decode: a page showing the call must still render)."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _json_text(value: Any) -> str:
    try:
        if isinstance(value, str):
            try:  # arguments are a JSON string: shown indented
                value = json.loads(value)
            except ValueError:
                return str(value)
        return json.dumps(value, indent=2, ensure_ascii=False)
    except RecursionError:  # nested too deeply to indent: shown as it is
        return value if isinstance(value, str) else repr(value)


def _text_of(value: Any) -> str:
    """The text of a tool result or a block list: strings joined, other shapes as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, dict) and isinstance(v.get("text"), str) for v in value):
        return "\n".join(v["text"] for v in value)
    return _json_text(value)


def _parts(content: Any) -> list[Part]:
    """A message's ``content`` (or a Gemini ``parts`` list): a string or a list of blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [Part("text", content)] if content else []
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return [Part("other", _json_text(content))]
    parts: list[Part] = []
    for block in content:
        if isinstance(block, str):
            parts.append(Part("text", block))
            continue
        if not isinstance(block, dict):
            parts.append(Part("other", _json_text(block)))
            continue
        kind = block.get("type")
        if isinstance(block.get("text"), str) and kind in (None, "text", "input_text", "output_text"):
            parts.append(Part("text", block["text"]))
        elif (
            kind in ("image_url", "image", "input_image", "document", "input_file") or "inline_data" in block
        ):
            parts.append(Part("image", str(kind or "image")))
        elif kind in ("tool_use", "server_tool_use"):
            parts.append(Part("tool_call", _json_text(block.get("input")), str(block.get("name", ""))))
        elif kind == "tool_result":
            parts.append(
                Part("tool_result", _text_of(block.get("content")), str(block.get("tool_use_id", "")))
            )
        elif kind in ("thinking", "redacted_thinking"):
            parts.append(Part("thinking", str(block.get("thinking", ""))))
        elif isinstance(block.get("functionCall"), dict):  # Gemini
            call = block["functionCall"]
            parts.append(Part("tool_call", _json_text(call.get("args")), str(call.get("name", ""))))
        elif isinstance(block.get("functionResponse"), dict):
            answer = block["functionResponse"]
            parts.append(Part("tool_result", _json_text(answer.get("response")), str(answer.get("name", ""))))
        else:
            parts.append(Part("other", _json_text(block)))
    return parts


def _tool_calls(calls: Any) -> list[Part]:
    """OpenAI's and Ollama's ``tool_calls``: ``[{"function": {"name", "arguments"}}]``."""
    parts = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            name, arguments = str(function.get("name") or ""), function.get("arguments")
            raw = name + (arguments if isinstance(arguments, str) else json.dumps(arguments))
            parts.append(Part("tool_call", _json_text(arguments), name, raw))
    return parts


def _message(item: dict[str, Any]) -> Message | None:
    """One entry of ``messages`` / ``contents`` / the Responses API's ``input``."""
    kind = item.get("type")
    if kind == "function_call":  # Responses API items
        return Message(
            "assistant", [Part("tool_call", _json_text(item.get("arguments")), str(item.get("name", "")))]
        )
    if kind == "function_call_output":
        return Message(
            "tool", [Part("tool_result", _text_of(item.get("output")), str(item.get("call_id", "")))]
        )
    if kind == "reasoning":
        return None
    role = str(item.get("role") or "user")
    role = _ROLES.get(role, role)
    parts = _parts(item.get("content") if "content" in item else item.get("parts"))
    if item.get("images"):  # Ollama
        parts.append(Part("image", f"{len(item['images'])} image(s)"))
    parts += _tool_calls(item.get("tool_calls"))
    if role == "tool" and parts and parts[0].kind == "text":
        parts[0] = Part("tool_result", parts[0].text, str(item.get("tool_call_id") or item.get("name") or ""))
    return Message(role, parts)


def request_conversation(body: str | None) -> list[Message]:
    """The messages of a request body, system prompt first; ``[]`` when it has none we know."""
    data = _object(body)
    if data is None:
        return []
    messages: list[Message] = []
    for key in ("system", "instructions", "systemInstruction", "system_instruction"):
        value = data.get(key)
        if isinstance(value, dict):  # Gemini: {"parts": [...]}
            value = value.get("parts")
        parts = _parts(value)
        if parts:
            messages.append(Message("system", parts))
    for key in ("messages", "contents"):
        items = data.get(key)
        if isinstance(items, list):
            messages += [m for m in (_message(i) for i in items if isinstance(i, dict)) if m]
    value = data.get("input")
    if isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
        messages += [m for m in (_message(i) for i in value) if m]
    elif isinstance(value, str) or (isinstance(value, list) and all(isinstance(i, str) for i in value)):
        texts = [value] if isinstance(value, str) else value
        messages.append(Message("input", [Part("text", t) for t in texts]))
    if isinstance(data.get("prompt"), str):
        messages.append(Message("user", [Part("text", data["prompt"])]))
    return messages


def tool_names(body: str | None) -> list[str]:
    """The names of the tools a request offered the model."""
    data = _object(body)
    tools = data.get("tools") if data is not None else None
    names: list[str] = []
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        if isinstance(function, dict) and function.get("name"):
            names.append(str(function["name"]))
        elif tool.get("name"):
            names.append(str(tool["name"]))
        for declaration in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
            if isinstance(declaration, dict) and declaration.get("name"):
                names.append(str(declaration["name"]))
    return names


def response_tool_calls(body: str | None) -> list[Part]:
    """The tool calls in a (not streamed) response body: chat completions' and Ollama's
    ``tool_calls``, Anthropic's ``tool_use`` blocks, the Responses API's ``function_call``
    items, Gemini's ``functionCall`` parts."""
    data = _object(body)
    if data is None:
        return []
    parts: list[Part] = []
    for choice in data.get("choices") or []:
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            parts += _tool_calls(choice["message"].get("tool_calls"))
    if isinstance(data.get("message"), dict):
        parts += _tool_calls(data["message"].get("tool_calls"))
    if isinstance(data.get("content"), list):
        parts += [p for p in _parts(data["content"]) if p.kind == "tool_call"]
    for item in data.get("output") or []:
        if isinstance(item, dict) and item.get("type") == "function_call":
            message = _message(item)
            if message:
                parts += message.parts
    for candidate in data.get("candidates") or []:
        content = candidate.get("content") if isinstance(candidate, dict) else None
        if isinstance(content, dict):
            parts += [p for p in _parts(content.get("parts")) if p.kind == "tool_call"]
    return parts
