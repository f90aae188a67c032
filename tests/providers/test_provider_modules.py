"""How ``providers/`` is put together: each family module readable alone, no import cycle
among them (function-level imports included), and a host of one family handing a path to
another family's parser through the shape registry, not by importing it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import httptrack.providers as providers
from httptrack.providers import provider_by_name, shape_parser
from httptrack.providers.anthropic import Anthropic
from httptrack.providers.gemini import Gemini
from httptrack.providers.graphql import GraphQL
from httptrack.providers.openai import OpenAICompatible

PACKAGE = Path(providers.__file__).parent
#: The modules every family may import: the interface and the helpers families share.
SHARED = {"_base", "_batch", "_prompt"}
#: The one family others build on: the OpenAI-compatible families are subclasses of its parser.
BASE_FAMILY = "openai"
#: A family's own parts (``_<family>_*``): imported by that family alone, importing the
#: interface and shared helpers alone.
PARTS = {"_openai_chunks": "openai"}


def _imports(path: Path) -> tuple[set[str], list[int]]:
    """The ``providers`` modules ``path`` imports, and the lines of imports made inside a
    function or class body (anything but a module-level or ``TYPE_CHECKING`` import)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    nested: list[int] = []
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if id(node) not in top_level:
            nested.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found, nested


MODULES = sorted(p for p in PACKAGE.glob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_function_level_imports(path: Path) -> None:
    _, nested = _imports(path)
    assert not nested, f"{path.name} imports inside a function at lines {nested}"


@pytest.mark.parametrize("path", [p for p in MODULES if not p.name.startswith("_")], ids=lambda p: p.name)
def test_a_family_imports_no_other_family(path: Path) -> None:
    imported, _ = _imports(path)
    allowed = SHARED | ({BASE_FAMILY} if path.stem != BASE_FAMILY else set())
    allowed |= {part for part, family in PARTS.items() if family == path.stem}
    assert imported <= allowed, f"{path.name} imports {sorted(imported - allowed)}"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if p.stem in SHARED | PARTS.keys()], ids=lambda p: p.name
)
def test_the_shared_modules_import_no_family(path: Path) -> None:
    imported, _ = _imports(path)
    assert imported <= SHARED, f"{path.name} imports {sorted(imported - SHARED)}"


@pytest.mark.parametrize(
    ("provider", "path", "shape"),
    [
        ("ollama", "/v1/messages", Anthropic),
        ("xai", "/v1/messages/count_tokens", Anthropic),
        ("azure_openai", "/anthropic/v1/messages", Anthropic),
        ("vertex_ai", "/v1/projects/p/locations/l/publishers/anthropic/models/claude:rawPredict", Anthropic),
        ("gemini", "/v1beta/openai/chat/completions", OpenAICompatible),
        ("generic", "/graphql", GraphQL),
    ],
)
def test_a_second_api_shape_is_read_by_its_own_parser(provider: str, path: str, shape: type) -> None:
    parser = provider_by_name(provider).parser_for("POST", path)
    assert type(parser) is shape
    assert parser is shape_parser(
        {Anthropic: "anthropic", OpenAICompatible: "openai", GraphQL: "graphql"}[shape]
    )


def test_every_shape_is_registered_once_the_package_is_imported() -> None:
    assert type(shape_parser("openai")) is OpenAICompatible
    assert type(shape_parser("anthropic")) is Anthropic
    assert type(shape_parser("gemini")) is Gemini
    assert type(shape_parser("graphql")) is GraphQL


# -- nothing outside providers/ names a provider's wire format ---------------------------

#: Words of the providers' wire formats (end markers, usage fields, request options, cache-key
#: headers, statuses, price ids and hosts) that belong in ``providers/`` and nowhere else.
WIRE_WORDS = (
    "[DONE]",
    "message_start",
    "message_delta",
    "message_stop",
    "response.completed",
    "usageMetadata",
    "billed_units",
    "x_groq",
    "choices",
    "prompt_tokens",
    "completion_tokens",
    "cache_read_input_tokens",
    "prompt_eval_count",
    "promptTokenCount",
    "candidatesTokenCount",
    "finishReason",
    "done_reason",
    "stream_options",
    "keep_alive",
    "in_progress",
    "unload",
    "service_tier",
    "on_demand",
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "x-goog-user-project",
    "systemInstruction",
    "functionCall",
    "inlineData",
    "tool_use",
    "image_url",
    "input_image",
    "ollama.com",
    "x-ai",
)
_WIRE = re.compile("|".join(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])" for word in WIRE_WORDS))
#: What may speak the wire formats: the providers themselves, the built-in fake provider
#: (which serves them) and the demo (a client of it).
SPEAKERS = ("providers/", "_fake/", "_demo.py")


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """Every string (and bytes) literal of a module but its docstrings: what the code says,
    not what its documentation explains."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docs and isinstance(node.value, str | bytes):
            value = node.value
            found.append((node.lineno, value.decode("latin-1") if isinstance(value, bytes) else value))
    return found


def test_no_module_outside_providers_names_a_wire_detail() -> None:
    package = PACKAGE.parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package).as_posix()
        if where.startswith(SPEAKERS):
            continue
        for line, text in _string_literals(path):
            match = _WIRE.search(text)
            if match:
                offenders.append(f"httptrack/{where}:{line}: {match.group()!r}")
    assert not offenders, "provider wire details outside providers/:\n" + "\n".join(offenders)
