"""Probe: what clipping each row at its least-squares point does to a model's quantised weights.

Below 8 bits ``edgeasr.compress.quant`` scales each row to its least-squares clipping point
instead of its maximum (``clipped_scale`` against ``max_scale``). This prints, per bit width and
for both choices, the rounding error over all compressible weights (squared error relative to the
weights' energy), the share of weights that saturate, and the codes' order-0 entropy (what the
packed file pays per weight before the zero map). No training, a few seconds.

    .venv/bin/python scripts/probe_clipping.py [--model models/edgeasr-small-en]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from edgeasr.compress.quant import clipped_scale, dequantize, max_scale, qmax, quantize
from edgeasr.compress.sparsity import compressible_weights
from edgeasr.model.checkpoint import load_package


def entropy_bits(codes: np.ndarray) -> float:
    """Order-0 entropy per code, in bits."""
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models/edgeasr-small-en"))
    args = ap.parse_args()
    model, _, _ = load_package(args.model)
    params = dict(model.named_parameters())
    weights = [
        params[n].detach().reshape(params[n].shape[0], -1) for n in compressible_weights(model)
    ]
    energy = sum(float((w**2).sum()) for w in weights)
    print(f"{args.model}: {sum(w.numel() for w in weights):,} compressible weights")
    print(f"{'bits':>4} {'scale':>8} {'rel. sq. error':>14} {'saturated':>9} {'entropy':>8}")
    for bits in (4, 6, 8):
        for name, scale_of in (("max", max_scale), ("clipped", clipped_scale)):
            err, saturated, codes = 0.0, 0, []
            for w in weights:
                s = scale_of(w, bits)
                q, _ = quantize(w, bits, s)
                err += float(((dequantize(q, s) - w) ** 2).sum())
                saturated += int((w.abs() > qmax(bits) * s[:, None]).sum())
                codes.append(q.flatten().numpy())
            all_codes = np.concatenate(codes)
            print(
                f"{bits:>4} {name:>8} {err / energy:>14.2e} {saturated / all_codes.size:>9.3%} "
                f"{entropy_bits(all_codes):>8.2f}"
            )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
