"""The runtime package: ONNX graphs, tokenizer and ``runtime.json``, verified on load.

Written by :mod:`edgeasr.export.onnx` on the training side; read here on the device with the
standard library only, so a truncated download or a swapped file is refused before any graph
is handed to onnxruntime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeasr.fileio import sha256_file

RUNTIME_FORMAT = "edgeasr-onnx"
RUNTIME_VERSION = 1
VARIANTS = ("fp32", "int8")
ROLES = ("encoder", "decoder", "joiner")


class RuntimePackageError(ValueError):
    """A runtime package that is missing files, corrupt, or of an unknown format version."""


def variant_files(variant: str) -> dict[str, str]:
    """File names of a variant's graphs: ``encoder.onnx`` or ``encoder.int8.onnx`` etc."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
    suffix = "" if variant == "fp32" else f".{variant}"
    return {role: f"{role}{suffix}.onnx" for role in ROLES}


def encoder_state_shapes(model_config: dict[str, Any]) -> tuple[tuple[int, ...], ...]:
    """Shapes of the encoder graph's two state inputs for one stream (batch axis 1).

    LSTM: h (L, 1, encoder_dim) and c (L, 1, lstm_hidden). Conformer: the attention cache
    (L, 1, left_context, 2 x encoder_dim + 1) and the convolution cache
    (L, 1, conv_kernel - 1, encoder_dim); see :mod:`edgeasr.model.conformer`. A plain function of
    the config, so the device needs no torch to start a stream.
    """
    kind = model_config.get("encoder_type", "lstm")
    L, D = int(model_config["num_layers"]), int(model_config["encoder_dim"])
    if kind == "lstm":
        return (L, 1, D), (L, 1, int(model_config["lstm_hidden"]))
    if kind == "conformer":
        left, kernel = int(model_config["left_context"]), int(model_config["conv_kernel"])
        return (L, 1, left, 2 * D + 1), (L, 1, kernel - 1, D)
    raise RuntimePackageError(f"the ONNX runtime does not run {kind!r} encoders")


@dataclass(frozen=True)
class RuntimePackage:
    """A verified runtime package directory and its manifest."""

    path: Path
    manifest: dict[str, Any]

    def graph(self, role: str, variant: str) -> Path:
        files = self.manifest["variants"].get(variant)
        if files is None:
            raise RuntimePackageError(f"{self.path}: has no {variant} variant (export it)")
        return self.path / files[role]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.model"

    @property
    def model_config(self) -> dict[str, Any]:
        return self.manifest["model_config"]

    @property
    def subsampling(self) -> int:
        return int(self.manifest["subsampling"])

    @property
    def blank_penalty(self) -> float:
        return float(self.manifest.get("decoding", {}).get("blank_penalty", 0.0))


def load_runtime_package(path: str | Path) -> RuntimePackage:
    """Read ``runtime.json`` and check the format, version and the SHA-256 of every file."""
    d = Path(path)
    mf = d / "runtime.json"
    if not mf.is_file():
        raise RuntimePackageError(
            f"{d}: not a runtime package (no runtime.json; create it with `edgeasr export`)"
        )
    try:
        manifest = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RuntimePackageError(f"{mf}: malformed JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RUNTIME_FORMAT:
        raise RuntimePackageError(f"{mf}: not an {RUNTIME_FORMAT} manifest")
    if manifest.get("version") != RUNTIME_VERSION:
        raise RuntimePackageError(
            f"{mf}: version {manifest.get('version')!r} unsupported (expected {RUNTIME_VERSION})"
        )
    for key in ("files", "variants", "model_config", "subsampling", "fbank"):
        if key not in manifest:
            raise RuntimePackageError(f"{mf}: missing {key!r}")
    files = manifest["files"]
    listed = {f for v in manifest["variants"].values() for f in v.values()} | {"tokenizer.model"}
    for extra in ("endpoint", "biaser"):  # optional graphs must be checksummed like the rest
        if isinstance(manifest.get(extra), dict) and "file" in manifest[extra]:
            listed.add(manifest[extra]["file"])
    if not listed <= set(files):
        raise RuntimePackageError(f"{mf}: files without checksum: {sorted(listed - set(files))}")
    for name, digest in files.items():
        p = d / name
        if not p.is_file():
            raise RuntimePackageError(f"{p}: missing")
        if sha256_file(p) != digest:
            raise RuntimePackageError(f"{p}: checksum mismatch (corrupt or modified)")
    return RuntimePackage(d, manifest)
