"""The device's update client: follow the server's diffs from the model in use to the latest.

Each diff is downloaded to ``<store>/downloads/<name>.part``; an interrupted download resumes
from the bytes already there (HTTP ``Range``), and a file whose checksum does not match the
manifest is discarded and fetched again from the start. Only complete, checksummed files reach
:meth:`ModelStore.apply`, which verifies the signature and the base and switches atomically.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgeasr.update.diff import DiffError, sha256_bytes
from edgeasr.update.store import ModelStore

log = logging.getLogger(__name__)
CHUNK = 1 << 16


class UpdateError(RuntimeError):
    """The server could not be reached, or offers no path from the model in use."""


@dataclass
class PullResult:
    applied: list[str] = field(default_factory=list)  # diff files applied, in order
    bytes_downloaded: int = 0
    current: str = ""


def _download(
    client: httpx.Client, url: str, part: Path, expected: int, max_bytes: int | None
) -> int:
    """Fetch ``url`` into ``part``, resuming from its current size; returns bytes received.

    ``max_bytes`` stops after that many bytes (tests use it to cut a download short).
    """
    have = part.stat().st_size if part.exists() else 0
    if have >= expected:
        return 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    got = 0
    with client.stream("GET", url, headers=headers) as resp:
        if resp.status_code == 200 and have:  # no range support: start over
            have = 0
        elif resp.status_code not in (200, 206):
            raise UpdateError(f"{url}: HTTP {resp.status_code}")
        with open(part, "r+b" if have else "wb") as fh:
            fh.seek(have)
            fh.truncate()
            for chunk in resp.iter_bytes(CHUNK):
                if max_bytes is not None and got + len(chunk) > max_bytes:
                    chunk = chunk[: max_bytes - got]
                fh.write(chunk)
                got += len(chunk)
                if max_bytes is not None and got >= max_bytes:
                    fh.flush()
                    os.fsync(fh.fileno())
                    raise UpdateError(f"{url}: download interrupted after {got} bytes")
            fh.flush()
            os.fsync(fh.fileno())
    return got


def pull(
    server: str,
    store: ModelStore,
    public_key: Ed25519PublicKey,
    timeout_s: float = 30.0,
    max_bytes: int | None = None,
    transport: httpx.BaseTransport | None = None,
) -> PullResult:
    """Apply the server's diffs, one after another, until the device runs the latest model."""
    downloads = store.root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    result = PullResult(current=store.current_digest())
    with httpx.Client(base_url=server, timeout=timeout_s, transport=transport) as client:
        try:
            manifest = client.get("/manifest").raise_for_status().json()
        except httpx.HTTPError as exc:
            raise UpdateError(f"{server}: {exc}") from None
        by_base = {d["from"]: d for d in manifest.get("diffs", [])}
        while result.current != manifest.get("latest"):
            entry = by_base.get(result.current)
            if entry is None:
                raise UpdateError(
                    f"the server offers no diff from {result.current[:16]} "
                    f"(latest {str(manifest.get('latest'))[:16]}): install a full model"
                )
            part = downloads / (entry["file"] + ".part")
            try:
                result.bytes_downloaded += _download(
                    client, f"/files/{entry['file']}", part, int(entry["bytes"]), max_bytes
                )
            except httpx.HTTPError as exc:
                raise UpdateError(f"{entry['file']}: {exc} (will resume)") from None
            data = part.read_bytes()
            if sha256_bytes(data) != entry["sha256"]:
                part.unlink()
                raise UpdateError(f"{entry['file']}: checksum mismatch, discarded; pull again")
            try:
                store.apply(data, public_key)
            except DiffError:
                part.unlink()
                raise
            part.unlink()
            result.applied.append(entry["file"])
            result.current = entry["to"]
            log.info("applied %s", entry["file"])
    return result
