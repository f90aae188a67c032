"""Hosted APIs that speak OpenAI's wire format. They share the OpenAI parser; each has its
own name (so its own prices in genai-prices) and hosts. Their quirks are read by the shared
parser: Groq's ``x_groq.usage`` on the last chunk, DeepSeek's ``prompt_cache_hit_tokens``,
Mistral's usage on the finish-reason chunk.
"""

from __future__ import annotations

from .openai import OpenAICompatible

__all__ = ["COMPATIBLE", "DeepSeek", "Fireworks", "Groq", "Mistral", "OpenRouter", "Perplexity", "Together", "XAI"]


class Mistral(OpenAICompatible):
    name = "mistral"
    hosts = ("api.mistral.ai", "codestral.mistral.ai")


class Groq(OpenAICompatible):
    name = "groq"
    hosts = ("api.groq.com",)


class DeepSeek(OpenAICompatible):
    name = "deepseek"
    hosts = ("api.deepseek.com",)


class Together(OpenAICompatible):
    name = "together"
    hosts = ("api.together.xyz", "api.together.ai")


class OpenRouter(OpenAICompatible):
    name = "openrouter"
    hosts = ("openrouter.ai",)


class XAI(OpenAICompatible):
    name = "xai"
    hosts = ("api.x.ai",)


class Fireworks(OpenAICompatible):
    name = "fireworks"
    hosts = ("api.fireworks.ai",)


class Perplexity(OpenAICompatible):
    name = "perplexity"
    hosts = ("api.perplexity.ai",)


COMPATIBLE: tuple[type[OpenAICompatible], ...] = (
    Mistral, Groq, DeepSeek, Together, OpenRouter, XAI, Fireworks, Perplexity,
)  # fmt: skip
