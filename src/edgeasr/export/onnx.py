"""Export a model package to the ONNX runtime package the device loads (no torch on the device).

The transducer is split the way streaming search uses it:

* ``encoder.onnx``: one chunk of raw fbank (B, T, 80) plus the carried encoder state in (``h``
  and ``c``: the LSTM state, or the Conformer's attention and convolution caches), projected
  encoder frames (B, T/subsampling, J) plus the new state out. Normalisation is inside the graph.
* ``decoder.onnx``: the stateless predictor on the last ``context_size`` tokens → (N, J).
* ``joiner.onnx``: projected encoder and decoder vectors → logits (N, V).

* ``biaser.onnx`` (when the model package has a trained neural biasing module,
  :mod:`edgeasr.model.biaser`): the joiner together with the pointer generator, projected
  encoder and decoder vectors plus the pointer masks and trie features → biased log-probs (N, V).
  It is small and stays fp32 for both variants.

``*.int8.onnx`` are the same graphs after onnxruntime's dynamic int8 quantisation (weights int8,
activations quantised on the fly), which is what a CPU-bound device runs. ``runtime.json`` lists
every file with its SHA-256, the shapes the runtime needs and the tuned decoding settings.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from edgeasr.features import FbankConfig
from edgeasr.fileio import atomic_write_bytes, sha256_file
from edgeasr.model.checkpoint import load_package, tuned_blank_penalty, tuned_rescorer
from edgeasr.model.transducer import Transducer
from edgeasr.runtime.package import (
    RUNTIME_FORMAT,
    RUNTIME_VERSION,
    encoder_state_shapes,
    variant_files,
)
from edgeasr.search.rescore import Rescorer

OPSET = 17


class _EncoderGraph(nn.Module):
    """One chunk plus carried state in; the joiner's encoder frames and the new state out, and,
    for a model with a CTC head, that head's log-probs of the same frames (``ctc``), which the
    runtime's second pass (:mod:`edgeasr.search.rescore`) reads."""

    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple:
        lens = torch.full((feats.shape[0],), feats.shape[1], dtype=torch.long)
        raw, _, (h2, c2) = self.model.encode_raw(feats, lens, (h, c))
        enc = self.model.joiner.enc_proj(raw)
        if self.model.ctc_head is None:
            return enc, h2, c2
        return enc, h2, c2, self.model.ctc_log_probs(raw)


class _DecoderGraph(nn.Module):
    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.model = model

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        return self.model.decode_tokens(contexts)


class _JoinerGraph(nn.Module):
    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.joiner = model.joiner

    def forward(self, enc: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        return self.joiner(enc, dec)


def _export(module: nn.Module, args: tuple, path: Path, names: dict, axes: dict) -> None:
    # The wrapper must be in eval mode itself: the exporter restores the top module's training
    # flag afterwards, which would otherwise switch dropout back on in the torch model.
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of the TorchScript exporter
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=names["in"],
            output_names=names["out"],
            dynamic_axes=axes,
            opset_version=OPSET,
        )


def export_graphs(model: Transducer, out_dir: Path) -> dict[str, str]:
    """Write the three fp32 graphs; returns {role: file name}."""
    cfg = model.cfg
    model = model.eval()
    feats = torch.randn(1, 2 * cfg.subsampling, cfg.num_mel_bins)
    h, c = (torch.zeros(shape) for shape in encoder_state_shapes(cfg.to_dict()))
    files = variant_files("fp32")
    ctc = model.ctc_head is not None
    _export(
        _EncoderGraph(model),
        (feats, h, c),
        out_dir / files["encoder"],
        {"in": ["feats", "h", "c"], "out": ["enc", "h_out", "c_out"] + (["ctc"] if ctc else [])},
        {
            "feats": {0: "batch", 1: "frames"},
            "h": {1: "batch"},
            "c": {1: "batch"},
            "enc": {0: "batch", 1: "enc_frames"},
            "h_out": {1: "batch"},
            "c_out": {1: "batch"},
            **({"ctc": {0: "batch", 1: "enc_frames"}} if ctc else {}),
        },
    )
    ctx = torch.zeros(3, cfg.context_size, dtype=torch.long)
    _export(
        _DecoderGraph(model),
        (ctx,),
        out_dir / files["decoder"],
        {"in": ["contexts"], "out": ["dec"]},
        {"contexts": {0: "n"}, "dec": {0: "n"}},
    )
    J = cfg.joiner_dim
    _export(
        _JoinerGraph(model),
        (torch.randn(3, J), torch.randn(3, J)),
        out_dir / files["joiner"],
        {"in": ["enc", "dec"], "out": ["logits"]},
        {"enc": {0: "n"}, "dec": {0: "n"}, "logits": {0: "n"}},
    )
    return files


def quantize_graphs(out_dir: Path) -> dict[str, str]:
    """Dynamic int8 quantisation of every fp32 graph (LSTM and MatMul weights become int8)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = variant_files("fp32"), variant_files("int8")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs an advisory on the root logger per graph
    try:
        for role in src:
            quantize_dynamic(
                str(out_dir / src[role]), str(out_dir / dst[role]), weight_type=QuantType.QInt8
            )
    finally:
        root.setLevel(level)
    return dst


def export_endpoint_classifier(classifier: nn.Module, out_dir: Path) -> str:
    """The end-of-query MLP as ``endpoint.onnx`` (input ``x``: N × (J + 1))."""
    name = "endpoint.onnx"
    dim = classifier.net[0].in_features
    _export(
        classifier,
        (torch.zeros(2, dim),),
        out_dir / name,
        {"in": ["x"], "out": ["p"]},
        {"x": {0: "n"}, "p": {0: "n"}},
    )
    return name


class _BiaserGraph(nn.Module):
    def __init__(self, biaser: nn.Module) -> None:
        super().__init__()
        self.biaser = biaser
        # the joiner is the transducer's, not a submodule of the biaser: register it here so
        # its weights are parameters of the traced graph
        self.joiner = biaser.joiner

    def forward(
        self,
        enc: torch.Tensor,
        dec: torch.Tensor,
        valid: torch.Tensor,
        feats: torch.Tensor,
        blank_penalty: torch.Tensor,
        gate_offset: torch.Tensor,
    ) -> torch.Tensor:
        return self.biaser(enc, dec, valid, feats, blank_penalty, gate_offset)


def export_biaser(biaser: nn.Module, out_dir: Path) -> str:
    """The pointer generator with its joiner as ``biaser.onnx``."""
    from edgeasr.search.pointer import NUM_FEATURES

    name = "biaser.onnx"
    J = biaser.joiner.out.in_features
    V = biaser.joiner.out.out_features
    _export(
        _BiaserGraph(biaser),
        (
            torch.randn(3, J),
            torch.randn(3, J),
            torch.ones(3, V),
            torch.zeros(3, NUM_FEATURES),
            torch.zeros(1),
            torch.zeros(1),
        ),
        out_dir / name,
        {
            "in": ["enc", "dec", "valid", "feats", "blank_penalty", "gate_offset"],
            "out": ["log_probs"],
        },
        {
            "enc": {0: "n"},
            "dec": {0: "n"},
            "valid": {0: "n"},
            "feats": {0: "n"},
            "log_probs": {0: "n"},
        },
    )
    return name


def export_runtime_package(
    model: Transducer,
    tokenizer_bytes: bytes,
    out_dir: str | Path,
    blank_penalty: float = 0.0,
    int8: bool = True,
    source: dict | None = None,
    endpoint: tuple[nn.Module, dict] | None = None,
    biaser: nn.Module | None = None,
    rescorer: Rescorer | None = None,
    beam: int | None = None,
) -> Path:
    """Write a complete runtime package (graphs, tokenizer, ``runtime.json``) to ``out_dir``.

    ``endpoint`` is the end-of-query classifier and its tuned end-pointer settings, if trained;
    ``biaser`` the neural biasing module (on this model's joiner), if trained; ``rescorer`` the
    second pass' weights, if tuned, and ``beam`` the beam they were tuned at.
    """
    if rescorer is not None and rescorer.ctc_weight and model.ctc_head is None:
        raise ValueError("a second pass with a CTC weight needs a model with a CTC head")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    variants = {"fp32": export_graphs(model, out)}
    if int8:
        variants["int8"] = quantize_graphs(out)
    (out / "tokenizer.model").write_bytes(tokenizer_bytes)
    names = ["tokenizer.model"] + [f for v in variants.values() for f in v.values()]
    extra = {}
    if endpoint is not None:
        clf_file = export_endpoint_classifier(endpoint[0], out)
        names.append(clf_file)
        extra["endpoint"] = {"file": clf_file, "config": endpoint[1]}
    if biaser is not None:
        from edgeasr.search.pointer import NUM_FEATURES

        b_file = export_biaser(biaser, out)
        names.append(b_file)
        extra["biaser"] = {"file": b_file, "num_features": NUM_FEATURES}
    manifest = {
        "format": RUNTIME_FORMAT,
        "version": RUNTIME_VERSION,
        "files": {n: sha256_file(out / n) for n in sorted(set(names))},
        "variants": variants,
        "model_config": cfg.to_dict(),
        "subsampling": cfg.subsampling,
        "fbank": asdict(FbankConfig()),
        "decoding": {
            "blank_penalty": blank_penalty,
            **(rescorer or Rescorer()).to_decoding(),
            **({"beam": beam} if beam is not None else {}),
        },
        "source": source or {},
        **extra,
    }
    atomic_write_bytes(out / "runtime.json", json.dumps(manifest, indent=2).encode())
    return out


def export_model_dir(model_dir: str | Path, out_dir: str | Path, int8: bool = True) -> Path:
    """Export a verified model package (see edgeasr.model.checkpoint) to a runtime package."""
    model, tokenizer, manifest = load_package(model_dir)
    src = Path(model_dir)
    endpoint = None
    if "endpoint" in manifest:  # the classifier file was verified with the package
        from edgeasr.train.endpoint import load_classifier

        ep = manifest["endpoint"]
        endpoint = (load_classifier(src / ep["classifier"]), ep["config"])
    biaser = None
    if "biaser" in manifest:  # verified with the package, like the classifier
        from edgeasr.train.biaser import load_biaser

        biaser = load_biaser(src / manifest["biaser"]["file"], model)
    return export_runtime_package(
        model,
        tokenizer.model_proto,
        out_dir,
        blank_penalty=tuned_blank_penalty(manifest),
        int8=int8,
        source={
            "model_dir": src.name,
            "model_sha256": manifest["files"]["model.safetensors"],
        },
        endpoint=endpoint,
        biaser=biaser,
        rescorer=tuned_rescorer(manifest),
        beam=manifest.get("decoding", {}).get("beam"),
    )
