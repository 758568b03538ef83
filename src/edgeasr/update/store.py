"""The device's model store: versioned model packages, an atomic switch, and rollback.

Layout under ``root``::

    versions/<digest[:16]>/   model packages (model.safetensors, tokenizer.model, manifest.json)
    current  -> versions/...  the model in use (a symlink, replaced atomically)
    previous -> versions/...  the one before, kept for rollback

Applying a diff builds the new package in a temporary directory next to ``versions/``, fsyncs
it, checks that the result is exactly what the signed diff promised, renames it into place,
and only then swaps ``current``: a crash or a rejected diff at any point leaves the model in
use byte-identical. numpy + safetensors only, like the rest of the device side.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgeasr.update.diff import (
    DiffError,
    apply_payload,
    file_digest,
    read_diff,
    read_weights,
    serialize_weights,
    sha256_bytes,
    weights_digest,
)

MODEL_FILE = "model.safetensors"
MANIFEST = "manifest.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _swap_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (a new symlink renamed over the old one)."""
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


class ModelStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions = self.root / "versions"
        self.current_link = self.root / "current"
        self.previous_link = self.root / "previous"

    # -- queries ---------------------------------------------------------------------------
    @property
    def current(self) -> Path:
        if not self.current_link.is_symlink():
            raise FileNotFoundError(f"{self.root}: no model installed")
        return self.current_link.resolve()

    def current_digest(self) -> str:
        """:func:`edgeasr.update.diff.weights_digest` of the model in use."""
        return file_digest(self.current / MODEL_FILE)

    # -- changes ---------------------------------------------------------------------------
    def install(self, package: Path) -> Path:
        """Copy a whole model package in (first install, or the full-model update path).

        Raises ValueError, and installs nothing, if ``package`` is not a readable package.
        """
        package = Path(package)
        if not (package / MODEL_FILE).is_file() or not (package / MANIFEST).is_file():
            raise ValueError(f"{package}: not a model package (needs {MODEL_FILE}, {MANIFEST})")
        try:
            read_weights(package / MODEL_FILE)
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"{package / MODEL_FILE}: unreadable weights ({exc})") from None
        self.versions.mkdir(parents=True, exist_ok=True)
        dest = self.versions / file_digest(Path(package) / MODEL_FILE)[:16]
        if not dest.exists():
            tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.versions))
            for f in Path(package).iterdir():
                if f.is_file():
                    _write_synced(tmp / f.name, f.read_bytes())
            _fsync_dir(tmp)
            os.replace(tmp, dest)
            _fsync_dir(self.versions)
        self._switch(dest)
        return dest

    def apply(self, diff_bytes: bytes, public_key: Ed25519PublicKey) -> Path:
        """Verify and apply a diff to the current model; returns the new version's directory.

        Raises :class:`DiffError` (and changes nothing) if the diff is malformed, not signed by
        ``public_key``, made for another base model, or decodes to anything but the promised
        result.
        """
        diff = read_diff(diff_bytes, public_key)
        cur = self.current
        base, meta = read_weights(cur / MODEL_FILE)
        have = weights_digest(base, meta)
        if have != diff.base_sha256:
            raise DiffError(f"diff is for base {diff.base_sha256[:16]}, the device has {have[:16]}")
        weights = apply_payload(base, diff.header, diff.payload)
        if weights_digest(weights, diff.header["metadata"]) != diff.result_sha256:
            raise DiffError("the applied diff does not give the model it promises")
        result = serialize_weights(weights, diff.header["metadata"])
        self.versions.mkdir(parents=True, exist_ok=True)
        dest = self.versions / diff.result_sha256[:16]
        if not dest.exists():
            tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.versions))
            try:
                for f in cur.iterdir():
                    if f.is_file() and f.name not in (MODEL_FILE, MANIFEST):
                        _write_synced(tmp / f.name, f.read_bytes())
                _write_synced(tmp / MODEL_FILE, result)
                manifest = json.loads((cur / MANIFEST).read_text())
                manifest.setdefault("files", {})[MODEL_FILE] = sha256_bytes(result)
                manifest["update"] = {
                    "from": diff.base_sha256,
                    "method": diff.header["method"],
                    "info": diff.header.get("info", {}),
                }
                _write_synced(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
                _fsync_dir(tmp)
                os.replace(tmp, dest)
                _fsync_dir(self.versions)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        self._switch(dest)
        return dest

    def rollback(self) -> Path:
        """Go back to the previous version (and keep the one rolled back from as previous)."""
        if not self.previous_link.is_symlink():
            raise FileNotFoundError(f"{self.root}: no previous version to roll back to")
        prev = self.previous_link.resolve()
        self._switch(prev)
        return prev

    def _switch(self, dest: Path) -> None:
        old = self.current_link.resolve() if self.current_link.is_symlink() else None
        if old is not None and old == dest.resolve():
            return
        _swap_link(self.current_link, dest)
        if old is not None:
            _swap_link(self.previous_link, old)
