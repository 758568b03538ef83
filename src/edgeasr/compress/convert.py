"""Model package (safetensors, torch) ⇄ packed file.

``pack_model`` quantises with the bit width and block shape the package was trained for (its
manifest's ``info.compression``, written by compression training) or, for a float package, with
the width asked for, which is post-training quantisation. For a QAT package this reproduces the
trained integer codes exactly: its weights already sit on the grid, and ``quantize`` gives back
the grid of weights that sit on one (see ``compress.quant``).

An LSTM adds its two bias vectors (input and recurrent) before anything else, so the file stores
their sum as the input bias and the recurrent bias as zeros, which cost nothing: the device
computes the same gates from half the bias bytes (the numpy runtime sums the pair anyway).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from edgeasr.compress.packed import QuantTensor, pack, read_packed
from edgeasr.compress.quant import quantize
from edgeasr.compress.sparsity import block_shape_for, compressible_weights
from edgeasr.corpus.text import generate_utterances
from edgeasr.features import FbankConfig
from edgeasr.fileio import sha256_file
from edgeasr.model.checkpoint import load_package, save_package, set_decoding_defaults
from edgeasr.model.config import ModelConfig
from edgeasr.model.transducer import Transducer
from edgeasr.tokenizer import Tokenizer, without_nfkc_table


def pack_model(
    model_dir: str | Path, out: str | Path, bits: int | None = None, block: tuple | None = None
) -> dict:
    """Write ``out`` from a model package; returns a summary (bytes, bits, sparsity)."""
    model, tokenizer, manifest = load_package(model_dir)
    trained = manifest.get("info", {}).get("compression", {})
    bits = int(bits or trained.get("bits") or 8)
    block = tuple(block or trained.get("block") or (1, 1))
    names = set(compressible_weights(model))
    tensors: dict[str, object] = {}
    zeros = total = 0
    state = folded_lstm_biases(model)
    for n, p in state.items():
        if n.startswith("ctc_head."):
            continue  # training only
        if n in names:
            q, scale = quantize(p, bits)
            b = block_shape_for(tuple(p.shape), block)
            tensors[n] = QuantTensor(q.numpy(), scale.numpy(), bits, b)
            zeros += int((q == 0).sum())
            total += q.numel()
        else:
            tensors[n] = p.detach().numpy()
    cfg = {**model.cfg.to_dict(), "ctc_weight": 0.0}
    meta = {
        "model_config": cfg,
        "subsampling": model.cfg.subsampling,
        "fbank": asdict(FbankConfig()),
        # the CTC head stays behind, so the second pass' weights and the beam they were tuned
        # at do too: a packed model decodes as before any second pass was tuned
        "decoding": {
            k: v
            for k, v in manifest.get("decoding", {}).items()
            if k not in ("ctc_weight", "word_bonus", "rescoring", "beam")
        },
        "source": {"sha256": sha256_file(Path(model_dir) / "model.safetensors")},
        "compression": {"bits": bits, "block": list(block), "sparsity": zeros / max(1, total)},
    }
    probes = [u.text for u in generate_utterances(500, seed=0)]
    slim = without_nfkc_table(tokenizer, probes)
    meta["tokenizer_normalizer"] = "identity" if slim is not tokenizer else "as trained"
    size = pack(tensors, meta, slim.model_proto, out)
    return {"bytes": size, "bits": bits, "block": list(block), "sparsity": zeros / max(1, total)}


def folded_lstm_biases(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state with every LSTM's recurrent bias added into its input bias (and zeroed).

    The model computes exactly the same function; only the bias split changes.
    """
    state = {n: t.detach().clone() for n, t in model.state_dict().items()}
    for prefix, m in model.named_modules():
        if not isinstance(m, torch.nn.LSTM):
            continue
        at = f"{prefix}." if prefix else ""
        for pname, _ in m.named_parameters(recurse=False):
            if pname.startswith("bias_ih"):
                ih, hh = at + pname, at + pname.replace("bias_ih", "bias_hh")
                state[ih] = state[ih] + state[hh]
                state[hh] = torch.zeros_like(state[hh])
    return state


def unpack_model(packed: str | Path, out_dir: str | Path) -> Path:
    """Decode a packed file into a model package (dense float weights) for torch and export."""
    pm = read_packed(packed)
    cfg = ModelConfig.from_dict(pm.meta["model_config"])
    model = Transducer(cfg)
    state = {n: torch.from_numpy(a.copy()) for n, a in pm.dense().items()}
    model.load_state_dict(state)
    out = Path(out_dir)
    info = {"unpacked_from": Path(packed).name, "compression": pm.meta.get("compression", {})}
    save_package(model.eval(), Tokenizer(pm.tokenizer), out, info=info)
    if pm.meta.get("decoding"):
        set_decoding_defaults(out, pm.meta["decoding"])
    return out
