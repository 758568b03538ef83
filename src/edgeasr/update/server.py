"""The update server: a directory of signed diffs behind a small HTTP API.

Repository layout (written by :func:`publish`)::

    manifest.json   {"format": "edgeasr-updates", "version": 1, "latest": digest,
                     "diffs": [{"from", "to", "file", "bytes", "sha256", "method"}]}
    diffs/<to[:16]>-from-<from[:16]>.diff

API: ``GET /manifest`` (the JSON above) and ``GET /files/{name}`` (one diff, with HTTP ``Range``
support so an interrupted download resumes instead of starting over). The server never signs
anything: diffs are signed where they are made, and :func:`publish` refuses one that does not
verify with the update key, so a compromised server can withhold updates but not forge them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from edgeasr.fileio import atomic_write_bytes, sha256_file
from edgeasr.update.diff import read_diff

FORMAT = "edgeasr-updates"
VERSION = 1
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def read_manifest(repo: Path) -> dict[str, Any]:
    f = Path(repo) / "manifest.json"
    if not f.exists():
        return {"format": FORMAT, "version": VERSION, "latest": None, "diffs": []}
    m = json.loads(f.read_text())
    if m.get("format") != FORMAT or m.get("version") != VERSION:
        raise ValueError(f"{f}: not an {FORMAT} v{VERSION} manifest")
    return m


def publish(repo: Path, diff_file: Path, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Add a verified diff to the repository; its result becomes the latest version."""
    repo = Path(repo)
    d = read_diff(Path(diff_file).read_bytes(), public_key)
    (repo / "diffs").mkdir(parents=True, exist_ok=True)
    name = f"{d.result_sha256[:16]}-from-{d.base_sha256[:16]}.diff"
    shutil.copyfile(diff_file, repo / "diffs" / name)
    m = read_manifest(repo)
    entry = {
        "from": d.base_sha256,
        "to": d.result_sha256,
        "file": name,
        "bytes": d.size,
        "sha256": sha256_file(repo / "diffs" / name),
        "method": d.header["method"],
    }
    m["diffs"] = [e for e in m["diffs"] if e["file"] != name] + [entry]
    m["latest"] = d.result_sha256
    atomic_write_bytes(repo / "manifest.json", json.dumps(m, indent=1).encode())
    return entry


def create_app(repo: Path) -> FastAPI:
    """The FastAPI application serving ``repo``."""
    repo = Path(repo)
    app = FastAPI(title="edgeasr updates")

    @app.get("/manifest")
    def manifest() -> dict[str, Any]:
        return read_manifest(repo)

    @app.get("/files/{name}")
    def file(name: str, request: Request) -> Response:
        path = repo / "diffs" / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, f"no such file: {name}")
        data = path.read_bytes()
        rng = request.headers.get("range")
        if rng is None:
            return Response(data, media_type="application/octet-stream")
        m = _RANGE.match(rng.strip())
        start = int(m.group(1)) if m else -1
        end = int(m.group(2)) if m and m.group(2) else len(data) - 1
        if not m or start >= len(data) or end < start:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{len(data)}"})
        end = min(end, len(data) - 1)
        return Response(
            data[start : end + 1],
            status_code=206,
            media_type="application/octet-stream",
            headers={"Content-Range": f"bytes {start}-{end}/{len(data)}"},
        )

    return app
