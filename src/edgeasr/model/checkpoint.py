"""Model packages and training checkpoints, in safetensors (never pickle).

A *model package* is what ships: a directory with ``model.safetensors`` (weights plus the model
and feature config in its metadata), ``tokenizer.model`` and ``manifest.json`` listing the format
version and the SHA-256 of every file. Loading verifies all of it, so a truncated download or a
hand-edited file fails loudly instead of producing garbage transcripts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgeasr.fileio import atomic_write_bytes, sha256_file
from edgeasr.model.config import ModelConfig
from edgeasr.model.transducer import Transducer
from edgeasr.search.rescore import Rescorer
from edgeasr.tokenizer import Tokenizer

PACKAGE_FORMAT = "edgeasr-model"
PACKAGE_VERSION = 1


class ModelPackageError(ValueError):
    """A model directory that is missing files, corrupt, or of an unknown format version."""


def _state_dict(model: Transducer) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: Transducer, path: Path, metadata: dict[str, str] | None = None) -> None:
    meta = {"model_config": json.dumps(model.cfg.to_dict())}
    meta.update(metadata or {})
    tmp = path.with_name(path.name + ".tmp")
    save_file(_state_dict(model), str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_weights(path: Path) -> Transducer:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "model_config" not in meta:
        raise ModelPackageError(f"{path}: no model_config in safetensors metadata")
    model = Transducer(ModelConfig.from_dict(json.loads(meta["model_config"])))
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def save_package(
    model: Transducer, tokenizer: Tokenizer, out_dir: Path, info: dict | None = None
) -> None:
    """Write a verified model package (weights, tokenizer, manifest with checksums)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, out_dir / "model.safetensors", {"format": PACKAGE_FORMAT})
    tokenizer.save(out_dir / "tokenizer.model")
    files = {n: sha256_file(out_dir / n) for n in ("model.safetensors", "tokenizer.model")}
    manifest = {
        "format": PACKAGE_FORMAT,
        "version": PACKAGE_VERSION,
        "files": files,
        "num_params": model.num_params(),
        "model_config": model.cfg.to_dict(),
        "info": info or {},
    }
    atomic_write_bytes(out_dir / "manifest.json", json.dumps(manifest, indent=2).encode())


def load_package(model_dir: str | Path) -> tuple[Transducer, Tokenizer, dict]:
    """Load and verify a model package; raises ModelPackageError with the reason."""
    d = Path(model_dir)
    mf = d / "manifest.json"
    if not mf.exists():
        raise ModelPackageError(f"{d}: not a model package (no manifest.json)")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as exc:
        raise ModelPackageError(f"{mf}: malformed JSON ({exc.msg})") from None
    if manifest.get("format") != PACKAGE_FORMAT:
        raise ModelPackageError(f"{mf}: format is {manifest.get('format')!r}, not {PACKAGE_FORMAT}")
    if manifest.get("version") != PACKAGE_VERSION:
        raise ModelPackageError(
            f"{mf}: version {manifest.get('version')!r} unsupported (expected {PACKAGE_VERSION})"
        )
    for name, digest in manifest.get("files", {}).items():
        p = d / name
        if not p.exists():
            raise ModelPackageError(f"{p}: missing")
        if sha256_file(p) != digest:
            raise ModelPackageError(f"{p}: checksum mismatch (corrupt or modified)")
    model = load_weights(d / "model.safetensors")
    tokenizer = Tokenizer.load(d / "tokenizer.model")
    return model, tokenizer, manifest


def tuned_blank_penalty(manifest: dict) -> float:
    """The blank penalty recorded by ``edgeasr tune-decoding`` (0 for an untuned package)."""
    return float(manifest.get("decoding", {}).get("blank_penalty", 0.0))


def tuned_rescorer(manifest: dict) -> Rescorer:
    """The second-pass weights recorded by ``edgeasr tune-decoding`` (off when untuned)."""
    return Rescorer.from_decoding(manifest.get("decoding", {}))


def set_decoding_defaults(model_dir: str | Path, decoding: dict) -> None:
    """Record decoding settings tuned for this model (e.g. blank penalty) in its manifest.

    The manifest is not itself checksummed; the files it lists still are, so this cannot be used
    to slip in different weights.
    """
    mf = Path(model_dir) / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["decoding"] = {**manifest.get("decoding", {}), **decoding}
    atomic_write_bytes(mf, json.dumps(manifest, indent=2).encode())


def save_optimizer(opt: torch.optim.Optimizer, path: Path) -> dict:
    """Flatten optimizer tensors into safetensors; returns the JSON-able remainder."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, path: Path, extra: dict) -> None:
    tensors = load_file(str(path))
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for pid, sc in extra.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": extra["param_groups"]})
