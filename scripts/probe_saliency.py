"""Probe: one-shot pruning without fine-tuning: which score, and whether to re-fit what is kept.

Prunes a model package once to the target sparsity (``compress.sparsity.Pruner`` with the
schedule ending at step 0) and prints the WER of each variant on the test splits (beam 4, the
package's blank penalty). No training: it shows how much damage each choice does before
fine-tuning has to repair it.

- default: per layer or with one global threshold, scoring weights by ``|w|`` or by
  ``|w| * rms(input)`` (``compress.saliency.input_rms`` on evenly spaced training utterances),
  with the share of zeros it gave each matrix. About 6 minutes on 2 cores.
- ``--refit``: one global threshold over activation-aware scores, in 1x1, 4x1 and 8x1 blocks at
  50% and 1x1 at 60%, each once with the kept weights as they were and once re-fitted by least
  squares to the dense outputs on the calibration inputs (``prune.reconstruct``,
  ``compress.sparsity.reconstruct_kept``); the re-fitted model is then also quantised to int8
  per row (post-training, ``compress.quant.quantize_model``) and packed (``compress.convert``),
  with its bytes against the fp32 ``model.safetensors``: compression with no training at all.
  About 2.5 minutes on 2 cores.

    .venv/bin/python scripts/probe_saliency.py --corpus data/corpus [--refit] [--model DIR]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
from pathlib import Path

import torch

from edgeasr.compress.convert import pack_model
from edgeasr.compress.quant import quantize_model
from edgeasr.compress.saliency import calibration_batches, input_moments, rms_from_moments
from edgeasr.compress.sparsity import PruneConfig, Pruner, compressible_weights
from edgeasr.decode import evaluate_cache, word_error_rate
from edgeasr.model.checkpoint import load_package, save_package, tuned_blank_penalty
from edgeasr.train.data import FeatureCache, cuts_path

SPLITS = ("test", "test_xengine")
REFIT_SETTINGS = (((1, 1), 0.5), ((4, 1), 0.5), ((8, 1), 0.5), ((1, 1), 0.6))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=Path("models/edgeasr-small-en"))
    ap.add_argument("--sparsity", type=float, default=0.5, help="without --refit")
    ap.add_argument("--calibration-utts", type=int, default=200)
    ap.add_argument("--refit", action="store_true", help="compare re-fitted kept weights")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, tok, manifest = load_package(args.model)
    names = compressible_weights(model)
    feats = args.corpus / "feats"
    train = FeatureCache.build(cuts_path(args.corpus, "train"), feats)
    batches = calibration_batches(train, args.calibration_utts, tok.encode)
    # the full second moments only where the re-fit needs them; the RMS is their diagonal
    moments = input_moments(model, names, batches, full=args.refit)
    rms = rms_from_moments(moments)
    tests = {s: FeatureCache.build(cuts_path(args.corpus, s), feats) for s in SPLITS}

    def prune(cfg: PruneConfig) -> tuple[torch.nn.Module, Pruner]:
        pruned = copy.deepcopy(model)
        scale = rms if cfg.saliency == "activation" else None
        refit = moments if cfg.reconstruct else None
        pr = Pruner(pruned, names, cfg, 1, input_scale=scale, input_moment=refit)
        pr.update(0)
        return pruned, pr

    def wer_of(m: torch.nn.Module) -> float:
        refs, hyps = [], []
        for cache in tests.values():
            ev = evaluate_cache(m, tok, cache, 0, "beam", 4, tuned_blank_penalty(manifest))
            refs += [r.ref for r in ev.results]
            hyps += [r.hyp for r in ev.results]
        return word_error_rate(refs, hyps)

    def wer(cfg: PruneConfig) -> tuple[float, Pruner]:
        pruned, pr = prune(cfg)
        return wer_of(pruned), pr

    def int8_packed(m: torch.nn.Module, block: tuple[int, int]) -> tuple[float, int]:
        """WER of ``m`` quantised to int8 after the fact, and its packed file's bytes."""
        q = quantize_model(m, 8, names)
        with tempfile.TemporaryDirectory() as tmp:
            save_package(q, tok, Path(tmp) / "pkg", manifest.get("info"))
            size = pack_model(Path(tmp) / "pkg", Path(tmp) / "model.pack", 8, block)["bytes"]
        return wer_of(q), size

    if args.refit:
        fp32 = (args.model / "model.safetensors").stat().st_size
        print(f"{args.model} pruned once, global, activation-aware; WER on {' + '.join(SPLITS)}")
        for block, sparsity in REFIT_SETTINGS:
            cfg = PruneConfig(sparsity, 0.0, 0.0, 1, "global", block, "activation")
            plain = wer(cfg)[0]
            refitted = prune(dataclasses.replace(cfg, reconstruct=True))[0]
            q_wer, size = int8_packed(refitted, block)
            print(
                f"{block[0]}x{block[1]} {sparsity:.0%}: WER {plain:.2%} as pruned, "
                f"{wer_of(refitted):.2%} re-fitted, {q_wer:.2%} re-fitted + int8 "
                f"(packed {size:,} bytes = 1/{fp32 / size:.1f} of fp32)"
            )
        return
    print(f"{args.model} pruned once to {args.sparsity:.0%}; WER on {' + '.join(SPLITS)}, beam 4")
    for scope in ("global", "layer"):
        for saliency in ("magnitude", "activation"):
            cfg = PruneConfig(args.sparsity, 0.0, 0.0, 1, scope, (1, 1), saliency)
            w, pr = wer(cfg)
            zeros = {
                n.removesuffix(".weight"): f"{float((pr.mask(n) == 0).float().mean()):.0%}"
                for n in names
            }
            print(f"{scope:>6} {saliency:>10}: WER {w:.2%}  zeros {zeros}")


if __name__ == "__main__":
    main()
