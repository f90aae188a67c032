"""Turn collected exchanges into ``tests/fixtures/providers/<provider>/<name>/`` fixtures.

Input: JSON files with ``source``, ``expected`` and either ``text`` (a go-vcr cassette as
recorded by its project) or ``request``/``response`` (an exchange written from a
provider's API reference, or trimmed from a longer recording, as ``source`` says). The
output has the format of ``shared/provider-samples``: ``request.json``, ``response.json``,
``expected.json`` (with ``source``). Figures in ``expected`` are written by hand from the
payload, never computed by httptrack.

    python scripts/make_provider_fixtures.py /tmp/cassettes
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "providers"


def from_cassette(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    interaction = yaml.safe_load(text)["interactions"][0]
    req, resp = interaction["request"], interaction["response"]
    headers = {
        k.lower(): v[0]
        for k, v in (req.get("headers") or {}).items()
        if k.lower() in ("accept", "content-type")
    }
    body = req.get("body") or None
    request = {
        "method": req["method"],
        "url": req["url"],
        "headers": headers,
        "body": json.loads(body) if body else None,
    }
    response_headers = {
        k.lower(): v[0] for k, v in (resp.get("headers") or {}).items() if k.lower() == "content-type"
    }
    response = {"status": resp["code"], "headers": response_headers, "body_text": resp["body"]}
    return request, response


def main(folder: str) -> None:
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        if "text" in data:
            request, response = from_cassette(data["text"])
        else:
            request, response = data["request"], dict(data["response"])
            if "body" in response:
                response["body_text"] = json.dumps(response.pop("body"), ensure_ascii=False)
        note = data.get("note") or ""
        if note.startswith("hosts: "):
            host, _, provider = note.removeprefix("hosts: ").partition("=")
            request["hosts"] = {host: provider}
        expected = {**data["expected"], "source": data["source"]}
        if note and not note.startswith("hosts: "):
            expected["note"] = note
        target = OUT / expected["provider"] / path.stem
        target.mkdir(parents=True, exist_ok=True)
        for name, content in (("request", request), ("response", response), ("expected", expected)):
            (target / f"{name}.json").write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
        print(target.relative_to(OUT))


if __name__ == "__main__":
    main(sys.argv[1])
