"""Probe: can better entropy coding alone fit int8 + 50% sparsity into 1/8 of the fp32 bytes?

Issue 4's size bar asks for QAT int8 + 50% sparsity in at most 1/8 of the fp32 file. With
unstructured (1x1) pruning the packed file stays near 1/6.9, and the question is whether a better
coder than zstd would close the gap or whether the bits are really there. This takes a model
package, prunes each compressible matrix to the target by block magnitude (per layer, as the
benchmark's fine-tunes do), quantises it per row, and compares what the packed format spends on
the codes of the kept blocks (zstd, as ``compress.packed`` stores them) with their entropy:

- order-0: one distribution for all codes, what zstd's Huffman stage can reach;
- per-class: rows grouped by their code spread (mean |q|) into K classes, each coded with its
  own distribution (what a context-adaptive coder could exploit);

for 1x1, 2x1, 4x1 and 8x1 blocks, each with the zero map's cost (one bit per block) and the
file size it implies, against 1/8 of the fp32 ``model.safetensors``.

    .venv/bin/python scripts/probe_code_entropy.py [--model models/edgeasr-small-en]

With ``--packed FILE`` it measures a packed file instead (a trained model's own codes): its share
of zeros, the zero maps' binary entropy per weight, the kept codes' entropy, and their sum per
weight, which is the estimate the rate regulariser's budget holds (``Compressor.rate_bits``).

    .venv/bin/python scripts/probe_code_entropy.py --packed runs/compress-distill/NAME.pack
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import zstandard

from edgeasr.compress.convert import folded_lstm_biases
from edgeasr.compress.packed import ZSTD_LEVEL, QuantTensor, read_packed
from edgeasr.compress.quant import packed_bits, quantize
from edgeasr.compress.sparsity import (
    Pruner,
    block_scores,
    block_shape_for,
    compressible_weights,
    expand_block_mask,
)
from edgeasr.model.checkpoint import load_package


def entropy_bits(values: np.ndarray) -> float:
    """Total order-0 Shannon information of ``values`` in bits."""
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


def zstd_bits(values: np.ndarray, bits: int) -> float:
    offset = (1 << (bits - 1)) - 1
    data = (values + offset).astype(np.uint8).tobytes()
    return 8.0 * len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data))


def pruned_codes(model, names: set[str], sparsity: float, bits: int, block: tuple[int, int]):
    """Rows of int codes after pruning each matrix to ``sparsity`` by block magnitude (the
    benchmark's fine-tunes prune the same way, per layer) and quantising per row; returns the
    codes that the packed file stores (every code of a kept block, zeros included), one array per
    row, and the number of blocks (one zero-map bit each)."""
    rows: list[np.ndarray] = []
    n_blocks = 0
    for name, p in folded_lstm_biases(model).items():
        if name not in names:
            continue
        b = block_shape_for(tuple(p.shape), block)
        w = p.detach().reshape(p.shape[0], -1)
        keep = expand_block_mask(Pruner._keep(block_scores(w, b), sparsity), b, w.shape)
        q, _ = quantize(w * keep, bits)
        q, keep = q.numpy(), keep.numpy()
        for r, k in zip(q, keep, strict=True):
            rows.append(r[k])
        n_blocks += w.numel() // (b[0] * b[1])
    return rows, n_blocks


def packed_report(path: Path) -> None:
    """Zero maps and kept codes of a packed file, each matrix with its own distributions (as
    ``Compressor.rate_bits`` estimates them)."""
    stats = []
    for t in read_packed(path).tensors.values():
        if isinstance(t, QuantTensor):
            nz = t.codes[t.codes != 0]
            stats.append((t.codes.size, nz.size, entropy_bits(nz) / nz.size if nz.size else 0.0))
    map_bits, code_bits = packed_bits(stats)
    weights, kept = sum(n for n, _, _ in stats), sum(k for _, k, _ in stats)
    est = (map_bits + code_bits) / weights
    print(
        f"{path}: {path.stat().st_size:,} bytes; {weights:,.0f} quantised weights, "
        f"{1 - kept / weights:.1%} zeros\n"
        f"zero maps {map_bits / weights:.3f} bits/weight; kept codes {code_bits / kept:.2f} "
        f"bits each; estimate {est:.3f} bits/weight = {est * weights / 8:,.0f} bytes"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models/edgeasr-small-en"))
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--packed", type=Path, help="measure this packed file instead")
    args = ap.parse_args()
    if args.packed:
        packed_report(args.packed)
        return

    model, _, _ = load_package(args.model)
    names = set(compressible_weights(model))
    other = sum(
        p.numel()
        for n, p in folded_lstm_biases(model).items()
        if n not in names and not n.startswith("ctc_head.")
    )
    fp32 = (args.model / "model.safetensors").stat().st_size
    print(
        f"{args.model}: pruned to {args.sparsity:.0%} by block magnitude, int{args.bits} codes; "
        f"fp32 file {fp32:,} bytes, 1/8 = {fp32 / 8:,.0f}"
    )
    print(
        f"{'block':>6} {'codes kept':>11} {'zstd b/code':>11} {'entropy':>8} {'64 classes':>10} "
        f"{'zero map':>9} {'file (est.)':>12} {'vs fp32':>8}"
    )
    for br in (1, 2, 4, 8):
        rows, n_blocks = pruned_codes(model, names, args.sparsity, args.bits, (br, 1))
        codes = np.concatenate(rows)
        n = codes.size
        spread = np.array([np.abs(r).mean() if r.size else 0.0 for r in rows])
        classes = np.array_split(np.argsort(spread, kind="stable"), 64)
        h64 = sum(entropy_bits(np.concatenate([rows[i] for i in c])) for c in classes)
        code_bytes = zstd_bits(codes, args.bits) / 8
        map_bytes = n_blocks / 8
        total = map_bytes + code_bytes + 2 * other + 2 * len(rows)  # + float16 floats, scales
        print(
            f"{br:>4}x1 {n:>11,} {8 * code_bytes / n:>11.2f} {entropy_bits(codes) / n:>8.2f} "
            f"{h64 / n:>10.2f} {map_bytes:>9,.0f} {total:>12,.0f} {'1/%.2f' % (fp32 / total):>8}"
        )
    print("(codes of a fine-tuned model differ: this prunes the given weights once, no training)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
