#!/usr/bin/env python3
"""Rebuild ``httptrack/encodings/*.tiktoken.gz`` from the npm package ``js-tiktoken``.

httptrack must count tokens offline, so it ships OpenAI's ``o200k_base`` and ``cl100k_base``
BPE rank files inside the package.  The official files live on a blob store that tiktoken
downloads from on first use; this script reproduces them byte for byte from the copy of the
same ranks that the npm package ``js-tiktoken`` bundles (``dist/ranks/<name>.js``), and refuses
to write anything whose sha256 differs from the ``expected_hash`` that tiktoken itself pins in
``tiktoken_ext/openai_public.py``.  A matching hash is the proof that the output is the official
file.

js-tiktoken's compressed form is a JSON object whose ``bpe_ranks`` string holds lines of
``<prefix> <first_rank> <b64 token> <b64 token> ...`` (consecutive ranks from ``first_rank``).
The ``.tiktoken`` format is one ``<b64 token> <rank>\\n`` line per token, in rank order.

Usage (needs ``npm`` and access to the npm registry)::

    python scripts/build_encodings.py                # npm pack js-tiktoken@JS_TIKTOKEN_VERSION
    python scripts/build_encodings.py --package-dir /path/to/extracted/js-tiktoken/package

The gzip output is deterministic (mtime 0, no file name), so rerunning it gives identical files.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

JS_TIKTOKEN_VERSION = "1.0.21"

# sha256 of the decompressed official files, copied from tiktoken 0.14.0
# ``tiktoken_ext/openai_public.py`` (``load_tiktoken_bpe(..., expected_hash=...)``).
EXPECTED_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}

OUT_DIR = Path(__file__).resolve().parent.parent / "httptrack" / "encodings"


def fetch_package(workdir: Path) -> Path:
    """``npm pack`` js-tiktoken into *workdir* and return the extracted ``package`` directory."""
    spec = f"js-tiktoken@{JS_TIKTOKEN_VERSION}"
    out = subprocess.run(
        ["npm", "pack", spec, "--silent"], cwd=workdir, check=True, capture_output=True, text=True
    )
    tgz = workdir / out.stdout.strip().splitlines()[-1]
    with tarfile.open(tgz) as tar:
        tar.extractall(workdir, filter="data")
    return workdir / "package"


def js_ranks_to_tiktoken(js_source: str) -> bytes:
    """Convert a js-tiktoken ``ranks/<name>.js`` module to ``.tiktoken`` file contents."""
    text = js_source.strip()
    prefix = "export default "
    if text.startswith(prefix):
        text = text[len(prefix) :]
    text = text.rstrip(";")
    data = json.loads(text)
    ranks: dict[int, str] = {}
    for line in data["bpe_ranks"].split("\n"):
        if not line:
            continue
        _, offset_str, *tokens = line.split(" ")
        offset = int(offset_str)
        for i, token in enumerate(tokens):
            rank = offset + i
            if rank in ranks:
                raise ValueError(f"duplicate rank {rank}")
            ranks[rank] = token
    buf = io.BytesIO()
    for rank in sorted(ranks):
        token = ranks[rank]
        base64.b64decode(token, validate=True)  # sanity: every token is valid base64
        buf.write(f"{token} {rank}\n".encode("ascii"))
    return buf.getvalue()


def gzip_deterministic(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def build(package_dir: Path, out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name, expected in EXPECTED_SHA256.items():
        src = package_dir / "dist" / "ranks" / f"{name}.js"
        contents = js_ranks_to_tiktoken(src.read_text(encoding="utf-8"))
        digest = hashlib.sha256(contents).hexdigest()
        if digest != expected:
            print(f"{name}: sha256 {digest} != expected {expected}; NOT written", file=sys.stderr)
            failures += 1
            continue
        packed = gzip_deterministic(contents)
        target = out_dir / f"{name}.tiktoken.gz"
        target.write_bytes(packed)
        print(f"{name}: sha256 OK {digest}; {len(contents)} bytes -> {target} ({len(packed)} bytes gz)")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-dir", type=Path, help="an extracted js-tiktoken package directory")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    if args.package_dir is not None:
        return 1 if build(args.package_dir, args.out_dir) else 0
    with tempfile.TemporaryDirectory(prefix="httptrack-enc-") as tmp:
        package_dir = fetch_package(Path(tmp))
        return 1 if build(package_dir, args.out_dir) else 0


if __name__ == "__main__":
    raise SystemExit(main())
