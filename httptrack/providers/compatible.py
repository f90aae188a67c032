"""Hosted APIs that speak OpenAI's wire format. They share the OpenAI parser; each has its
own name (so its own prices in genai-prices) and hosts, and the shared parser reads their
quirks:

- Mistral: usage on the finish-reason chunk; FIM (``/v1/fim/completions``), agents
  (``/v1/agents/completions``) and the Conversations API (``/v1/conversations``, usage in
  ``conversation.response.done``); OCR is billed per page (not priced here).
- Groq: ``x_groq.usage`` on the last chunk (``x_groq.error`` when a stream stops early).
- DeepSeek: ``prompt_cache_hit_tokens`` for cached input; accepts ``stream_options``.
- Together, Fireworks: usage on the last chunk, always.
- OpenRouter: usage always in the last chunk, with the cost it billed (``usage.cost``),
  ``: OPENROUTER PROCESSING`` keep-alive comments, errors as a chunk with ``error``.
- xAI: reasoning tokens reported beside ``completion_tokens``, the cost in
  ``cost_in_usd_ticks``; accepts ``stream_options``; also serves ``/v1/messages``.
- Perplexity: usage (with ``citation_tokens``, ``num_search_queries`` and a ``cost`` object)
  on the chunks.
- The other OpenAI-compatible clouds of :data:`WELL_KNOWN` (Cerebras, Z.ai, the Hugging Face
  router, DeepInfra, Nebius, SambaNova, Moonshot, Novita ...): named by host, priced as
  genai-prices' provider of the same service where it has one, else by the model's name.
- Servers people run themselves, named when their host is mapped (``vllm``, ``sglang``,
  ``litellm``, ``lmstudio``, ``llamacpp``): accept ``stream_options``.

Where a provider is documented or recorded to accept ``stream_options.include_usage`` and
does not send usage without it, :meth:`include_usage` says so; the others report usage
on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._vocab import Operation
from ._base import Parsed, first_str, items
from .openai import OpenAICompatible, endpoint_kind

__all__ = [
    "COMPATIBLE",
    "VLLM",
    "WELL_KNOWN",
    "XAI",
    "DeepSeek",
    "Fireworks",
    "Groq",
    "LMStudio",
    "LiteLLM",
    "LlamaCpp",
    "Mistral",
    "OpenRouter",
    "Perplexity",
    "SGLang",
    "SelfHosted",
    "Together",
]


class Mistral(OpenAICompatible):
    name = "mistral"
    hosts = ("api.mistral.ai", "codestral.mistral.ai")
    price_provider = "mistral"

    def operation(self, method: str, path: str) -> Operation:
        path = path.rstrip("/")
        if path.endswith("/agents/completions") or ("/conversations" in path and method == "POST"):
            return "chat"
        return super().operation(method, path)

    def read_request(self, parsed: Parsed, method: str, path: str, query: str, body: Any) -> None:
        super().read_request(parsed, method, path, query, body)
        path = path.rstrip("/")
        if path.endswith("/ocr"):
            parsed.billed = True
        if "/conversations" in path:
            parsed.state["conversations"] = True
            if parsed.model is None and isinstance(body, dict) and isinstance(body.get("agent_id"), str):
                parsed.notes.append(f"agent {body['agent_id']}: its model is not named in the request")

    def read_body(self, parsed: Parsed, status: int, body: Any) -> None:
        super().read_body(parsed, status, body)
        if isinstance(body, dict) and parsed.state.get("conversations"):
            for output in items(body.get("outputs")):
                if isinstance(output, dict):
                    parsed.response_model = first_str(output.get("model")) or parsed.response_model
                    if isinstance(output.get("content"), str):
                        parsed.output.append(output["content"])

    def sse_reader(self, parsed: Parsed) -> Callable[[Parsed, str | None, str], bool] | None:
        if parsed.state.get("conversations"):
            return None
        return self.chunk_reader(parsed)  # chat completions: read_event defers to the base's

    def read_event(self, parsed: Parsed, event: str | None, data: Any) -> None:
        if not parsed.state.get("conversations") or not isinstance(data, dict):
            super().read_event(parsed, event, data)
            return
        kind = data.get("type") or event
        if kind == "message.output.delta":
            parsed.response_model = first_str(data.get("model")) or parsed.response_model
            if isinstance(data.get("content"), str):
                parsed.output.append(data["content"])
        elif kind == "conversation.response.done":
            self._take_usage(parsed, data.get("usage"))
            parsed.stream_done = parsed.usage_final = parsed.complete = True
        elif kind == "conversation.response.error":
            parsed.stream_error = True
            parsed.fail(
                str(data.get("code")) if data.get("code") is not None else None,
                first_str(data.get("message")),
            )


class Groq(OpenAICompatible):
    name = "groq"
    hosts = ("api.groq.com",)
    price_provider = "groq"


class DeepSeek(OpenAICompatible):
    name = "deepseek"
    hosts = ("api.deepseek.com",)
    price_provider = "deepseek"

    def include_usage(self, path: str, query: str) -> bool:
        return endpoint_kind(path) == "chat"


class Together(OpenAICompatible):
    name = "together"
    hosts = ("api.together.xyz", "api.together.ai")
    price_provider = "together"


class OpenRouter(OpenAICompatible):
    name = "openrouter"
    hosts = ("openrouter.ai",)
    price_provider = "openrouter"


class XAI(OpenAICompatible):
    name = "xai"
    hosts = ("api.x.ai",)
    price_provider = "x-ai"

    def include_usage(self, path: str, query: str) -> bool:
        return endpoint_kind(path) == "chat"


class Fireworks(OpenAICompatible):
    name = "fireworks"
    hosts = ("api.fireworks.ai",)
    price_provider = "fireworks"


class Perplexity(OpenAICompatible):
    name = "perplexity"
    hosts = ("api.perplexity.ai",)
    price_provider = "perplexity"


class SelfHosted(OpenAICompatible):
    """An OpenAI-compatible server people run themselves, named in ``HTTPTRACK_HOSTS`` or
    ``register_provider`` (``gpu1:8000=vllm``): no hosts of its own. These servers accept
    ``stream_options.include_usage`` on chat completions (vLLM since 0.5, SGLang, LiteLLM's
    proxy, LM Studio, llama.cpp's server), so streams get exact usage too. vLLM leaves
    ``usage`` out of the other chunks rather than marking them ``null``."""

    hosts = ()
    marks_usage_chunks = False

    def include_usage(self, path: str, query: str) -> bool:
        return endpoint_kind(path) == "chat"


class VLLM(SelfHosted):
    name = "vllm"


class SGLang(SelfHosted):
    name = "sglang"


class LiteLLM(SelfHosted):
    name = "litellm"


class LMStudio(SelfHosted):
    name = "lmstudio"


class LlamaCpp(SelfHosted):
    name = "llamacpp"


class _WellKnown(OpenAICompatible):
    """An OpenAI-compatible cloud known by its host (see :data:`WELL_KNOWN`)."""


#: OpenAI-compatible clouds, by host: ``(name, hosts, genai-prices id or None)``. Every path
#: on these hosts is tracked, as on any provider's host. Where genai-prices has no provider
#: for the service, its calls are priced by the model's name, else its cost is NULL with the reason.
WELL_KNOWN: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("cerebras", ("api.cerebras.ai",), "cerebras"),
    ("zai", ("api.z.ai",), "zai"),
    ("zhipuai", ("open.bigmodel.cn",), "zhipuai"),
    ("huggingface", ("router.huggingface.co", "api-inference.huggingface.co"), None),
    ("deepinfra", ("api.deepinfra.com",), None),
    ("nebius", ("api.studio.nebius.com", "api.studio.nebius.ai", "api.tokenfactory.nebius.com"), None),
    ("sambanova", ("api.sambanova.ai",), None),
    ("moonshotai", ("api.moonshot.ai", "api.moonshot.cn"), "moonshotai"),
    ("novita", ("api.novita.ai",), "novita"),
    ("minimax", ("api.minimax.io", "api.minimaxi.com", "api.minimax.chat"), "minimax"),
    ("hyperbolic", ("api.hyperbolic.xyz",), None),
    ("baseten", ("inference.baseten.co",), "baseten"),
    ("avian", ("api.avian.io",), "avian"),
    ("arcee", ("api.arcee.ai",), "arcee"),
    ("nvidia_nim", ("integrate.api.nvidia.com",), None),
    ("dashscope", ("dashscope.aliyuncs.com", "dashscope-intl.aliyuncs.com"), None),
    ("siliconflow", ("api.siliconflow.cn", "api.siliconflow.com"), None),
    ("lambda", ("api.lambda.ai", "api.lambdalabs.com"), None),
    ("github_models", ("models.github.ai", "models.inference.ai.azure.com"), None),
    ("ovhcloud", ("oai.endpoints.kepler.ai.cloud.ovh.net",), "ovhcloud"),
)


def _well_known() -> tuple[type[OpenAICompatible], ...]:
    return tuple(
        type(
            f"{name.title().replace('_', '')}API",
            (_WellKnown,),
            {"name": name, "hosts": hosts, "price_provider": price_id, "__module__": __name__},
        )
        for name, hosts, price_id in WELL_KNOWN
    )


COMPATIBLE: tuple[type[OpenAICompatible], ...] = (
    Mistral,
    Groq,
    DeepSeek,
    Together,
    OpenRouter,
    XAI,
    Fireworks,
    Perplexity,
    VLLM,
    SGLang,
    LiteLLM,
    LMStudio,
    LlamaCpp,
    *_well_known(),
)
