"""Google: the Gemini API (``generativelanguage.googleapis.com``) and Vertex AI
(``{region}-aiplatform.googleapis.com``, ``aiplatform.googleapis.com``).

Gemini API: generateContent, streamGenerateContent (SSE with ``alt=sse``, otherwise one JSON
array delivered over time), embedContent / batchEmbedContents, countTokens (free) and model
lists; the model is named in the path (``/v1beta/models/gemini-2.5-flash:generateContent``).
Its OpenAI-compatible endpoint (``/v1beta/openai/chat/completions``) is read by the OpenAI
parser.

Vertex AI: the same methods under ``/v1/projects/{p}/locations/{l}/publishers/google/models/
{model}:{method}``, plus ``:predict`` for text embeddings (token counts in
``predictions[].embeddings.statistics``); Claude models under ``publishers/anthropic``
(``:rawPredict`` / ``:streamRawPredict``, read by the Anthropic parser) and the
OpenAI-compatible ``endpoints/openapi/chat/completions``.

Usage, normalized from ``usageMetadata``: Gemini reports thoughts and tool-use prompt tokens
*apart* from the prompt and candidate counts, so
- input  = ``promptTokenCount`` + ``toolUsePromptTokenCount`` (cached content is already
  inside ``promptTokenCount``; ``cachedContentTokenCount`` is its breakdown);
- output = ``candidatesTokenCount`` + ``thoughtsTokenCount`` (reasoning = thoughts).
Audio prompts and image/audio outputs are priced apart by some models: their counts (from
the per-modality details) go to the usage's extra figures.
Streams repeat ``usageMetadata`` on every chunk with provisional figures: the last wins.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._usage import Usage
from .._vocab import Operation
from ._base import (
    Parsed,
    Provider,
    add_shape,
    all_choices_finished,
    as_int,
    choice_finished,
    dig,
    expect_choices,
    first_str,
    items,
    positive_int,
    shape_parser,
)
from ._prompt import PromptTally

__all__ = ["Gemini", "VertexAI", "read_gemini_usage"]

_ACTIONS: dict[str, Operation] = {
    "generateContent": "chat",
    "streamGenerateContent": "chat",
    "embedContent": "embeddings",
    "batchEmbedContents": "embeddings",
    "asyncBatchEmbedContent": "other",
    "countTokens": "other",
    "batchGenerateContent": "other",
}
#: Per-modality figures priced apart: (details key, modality) -> genai-prices usage key.
_MODALITIES = {
    ("promptTokensDetails", "AUDIO"): "input_audio_tokens",
    ("candidatesTokensDetails", "AUDIO"): "output_audio_tokens",
    ("candidatesTokensDetails", "IMAGE"): "output_image_tokens",
}


def read_gemini_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = as_int(raw.get("promptTokenCount"))
    candidates = as_int(raw.get("candidatesTokenCount"))
    thoughts = as_int(raw.get("thoughtsTokenCount"))
    tool_prompt = as_int(raw.get("toolUsePromptTokenCount"))
    if prompt is None and candidates is None and thoughts is None:
        return None
    input_tokens = None if prompt is None and tool_prompt is None else (prompt or 0) + (tool_prompt or 0)
    output_tokens = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=as_int(raw.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )
    for (details, modality), key in _MODALITIES.items():
        for item in items(raw.get(details)):
            if dig(item, "modality") == modality:
                count = as_int(dig(item, "tokenCount"))
                if count:
                    usage.extra[key] = usage.extra.get(key, 0) + count
    return usage


def _split_path(path: str) -> tuple[str | None, str | None]:
    """``(model, action)`` from ``.../models/<model>:<action>``."""
    _, sep, rest = path.rpartition("/models/")
    if not sep:
        return None, None
    model, _, action = rest.partition(":")
    return (model or None), (action or None)


class Gemini(Provider):
    name = "gemini"
    hosts: ClassVar[tuple[str, ...]] = ("generativelanguage.googleapis.com",)
    request_id_headers = ("x-request-id", "x-goog-request-id")
    cache_key_headers = frozenset({b"x-goog-user-project"})
    price_provider: ClassVar[str | None] = "google"

    def parser_for(self, method: str, path: str) -> Provider:
        if "/openai/" in path or "/endpoints/openapi/" in path:
            return shape_parser("openai")
        return self

    def max_output(self, body: dict[str, Any]) -> tuple[int | None, int]:
        config = body.get("generationConfig", body.get("generation_config"))  # the REST API takes both
        if not isinstance(config, dict):
            return None, 1
        most = positive_int(config.get("maxOutputTokens", config.get("max_output_tokens")))
        return most, positive_int(config.get("candidateCount", config.get("candidate_count"))) or 1

    def limit_error(self, message: str, code: str, metric: str) -> dict[str, Any]:
        return {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": message}}

    def operation(self, method: str, path: str) -> Operation:
        parser = self.parser_for(method, path)
        if parser is not self:
            return parser.operation(method, path)
        model, action = _split_path(path)
        if action is not None:
            if action == "predict":
                return "embeddings" if model and "embedding" in model else "other"
            return _ACTIONS.get(action, "other")
        if path.rstrip("/").endswith("/models") or model is not None:
            return "models" if method == "GET" else "other"
        return "other"

    def cacheable(self, method: str, path: str, operation: str) -> bool:
        if operation == "other":  # countTokens: free and read-only; never batches or uploads
            return method == "POST" and _split_path(path)[1] == "countTokens"
        return super().cacheable(method, path, operation)

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        model, action = _split_path(path)
        if action is not None:
            parsed.model = model
        parsed.stream = action == "streamGenerateContent"
        if action in ("batchGenerateContent", "asyncBatchEmbedContent") or "/batches" in path:
            parsed.batch = True
            parsed.billed = False  # creating a batch; its results are billed, not this call
        elif action == "countTokens" or parsed.operation == "models":
            parsed.billed = False
        elif action == "predict" and parsed.operation == "other":
            parsed.billed = True  # Imagen and other predict models: billed per image
        parsed.state["sse"] = "alt=sse" in query
        expect_choices(parsed, dig(body, "generationConfig", "candidateCount"))

    def stream_format(self, parsed: Parsed, content_type: str) -> str | None:
        fmt = super().stream_format(parsed, content_type)
        if fmt is None and parsed.stream:
            return "sse" if parsed.state.get("sse") else "json-array"
        return fmt

    def read_body(self, parsed: Parsed, status: int, body: Any) -> None:
        if isinstance(body, list):  # an error or a whole stream delivered as one array
            for item in body:
                self.read_event(parsed, None, item)
            return
        if not isinstance(body, dict):
            return
        if "error" in body:
            self._read_error(parsed, body["error"])
            return
        if isinstance(body.get("predictions"), list):
            self._read_predictions(parsed, body)
            return
        self._read_chunk(parsed, body)

    def read_event(self, parsed: Parsed, event: str | None, data: Any) -> None:
        if not isinstance(data, dict):
            return
        if "error" in data:
            parsed.stream_error = True
            self._read_error(parsed, data["error"])
            usage = read_gemini_usage(data.get("usageMetadata"))  # what the error billed
            if usage is not None:
                parsed.usage = usage
            return
        self._read_chunk(parsed, data)

    def _read_chunk(self, parsed: Parsed, chunk: dict[str, Any]) -> None:
        parsed.response_model = first_str(chunk.get("modelVersion")) or parsed.response_model
        parsed.response_id = first_str(chunk.get("responseId")) or parsed.response_id
        usage = read_gemini_usage(chunk.get("usageMetadata"))
        if usage is not None:
            parsed.usage = usage
        for other in items(chunk.get("candidates")):  # several candidates each finish on their own
            if first_str(dig(other, "finishReason")):
                index = dig(other, "index")
                choice_finished(parsed, index if index.__class__ is int else 0)
        candidate = dig(chunk, "candidates", 0)
        if isinstance(candidate, dict):
            finish = first_str(candidate.get("finishReason"))
            if finish:
                parsed.finish_reason = finish
                # The last chunk (the recorder also checks a JSON array was closed).
                parsed.stream_done = True
                parsed.complete = all_choices_finished(parsed)
                parsed.usage_final = usage is not None
            for part in items(dig(candidate, "content", "parts")):
                if isinstance(dig(part, "text"), str):
                    parsed.output.append(part["text"])
                elif isinstance(dig(part, "functionCall"), dict):
                    parsed.output.append(str(part["functionCall"]))
        feedback = dig(chunk, "promptFeedback", "blockReason")
        if isinstance(feedback, str):
            parsed.finish_reason = feedback

    def _read_predictions(self, parsed: Parsed, body: dict[str, Any]) -> None:
        """Vertex AI ``:predict``: text embeddings carry their token counts per input."""
        counts = [as_int(dig(p, "embeddings", "statistics", "token_count")) for p in body["predictions"]]
        if counts and all(c is not None for c in counts):
            parsed.usage = Usage(input_tokens=sum(c for c in counts if c is not None))
        parsed.response_model = first_str(body.get("deployedModelId")) or parsed.response_model

    def count_prompt(self, tally: PromptTally, operation: str, body: dict[str, Any]) -> None:
        # Text only, as for Claude: Gemini's tokenizer is not public.
        _count_contents(tally, body.get("systemInstruction", body.get("system_instruction")))
        _count_contents(tally, body.get("contents"))
        _count_contents(tally, body.get("content"))  # embedContent
        requests = body.get("requests")  # batchEmbedContents
        if isinstance(requests, list):
            for request in requests:
                if isinstance(request, dict):
                    _count_contents(tally, request.get("content"))
        tools = body.get("tools")
        if isinstance(tools, list):
            for tool in tools:
                if isinstance(tool, dict):
                    declarations = tool.get("functionDeclarations", tool.get("function_declarations"))
                    if declarations is not None:
                        tally.json(declarations)

    def _read_error(self, parsed: Parsed, error: Any) -> None:
        if isinstance(error, dict):
            code = first_str(error.get("status"))
            if code is None and error.get("code") is not None:
                code = str(error.get("code"))
            parsed.fail(code, first_str(error.get("message")))
        elif isinstance(error, str):
            parsed.fail(None, error)


class VertexAI(Gemini):
    """Google's models on Vertex AI; Claude on Vertex is read as Anthropic's API."""

    name = "vertex_ai"
    hosts = ("aiplatform.googleapis.com", "*-aiplatform.googleapis.com")

    def parser_for(self, method: str, path: str) -> Provider:
        if "/publishers/anthropic/" in path:
            return shape_parser("anthropic")
        return super().parser_for(method, path)


#: The reader of Gemini's API shape (a request body in it, on a host mapped by hand).
add_shape("gemini", Gemini())


def _count_contents(tally: PromptTally, content: Any) -> None:
    """``Content`` objects (``{"role", "parts"}``), a list of them, or plain text."""
    if isinstance(content, dict):
        tally.content(content.get("parts"), _count_part)
    elif isinstance(content, list):
        for item in content:
            _count_contents(tally, item)
    elif isinstance(content, str):
        tally.text(content)


def _count_part(tally: PromptTally, part: dict[str, Any], depth: int) -> None:
    """One part: text, an inline or file image, a function call or response, code and its
    result (snake_case spellings too). Audio and other files are not counted."""
    if isinstance(part.get("text"), str):
        tally.text(part["text"])
        return
    blob = part.get("inlineData") or part.get("inline_data") or part.get("fileData") or part.get("file_data")
    if isinstance(blob, dict):
        mime = blob.get("mimeType") or blob.get("mime_type")
        if isinstance(mime, str) and mime.startswith("image/"):
            tally.images()
            return
    call = part.get("functionCall") or part.get("function_call")
    if isinstance(call, dict):
        tally.text(call.get("name"))
        tally.json(call.get("args"))
    response = part.get("functionResponse") or part.get("function_response")
    if isinstance(response, dict):
        tally.text(response.get("name"))
        tally.json(response.get("response"))
    code = part.get("executableCode") or part.get("executable_code")
    if isinstance(code, dict):
        tally.text(code.get("code"))
    result = part.get("codeExecutionResult") or part.get("code_execution_result")
    if isinstance(result, dict):
        tally.text(result.get("output"))
