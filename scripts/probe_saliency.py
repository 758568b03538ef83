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
  ``compress.sparsity.reconstruct_kept``). About 3 minutes on 2 cores.

    .venv/bin/python scripts/probe_saliency.py --corpus data/corpus [--refit] [--model DIR]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from edgeasr.compress.saliency import calibration_batches, input_moments, rms_from_moments
from edgeasr.compress.sparsity import PruneConfig, Pruner, compressible_weights
from edgeasr.decode import evaluate_cache, word_error_rate
from edgeasr.model.checkpoint import load_package, tuned_blank_penalty
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

    def wer(cfg: PruneConfig) -> tuple[float, Pruner]:
        pruned = copy.deepcopy(model)
        scale = rms if cfg.saliency == "activation" else None
        refit = moments if cfg.reconstruct else None
        pr = Pruner(pruned, names, cfg, 1, input_scale=scale, input_moment=refit)
        pr.update(0)
        refs, hyps = [], []
        for cache in tests.values():
            ev = evaluate_cache(pruned, tok, cache, 0, "beam", 4, tuned_blank_penalty(manifest))
            refs += [r.ref for r in ev.results]
            hyps += [r.hyp for r in ev.results]
        return word_error_rate(refs, hyps), pr

    if args.refit:
        print(f"{args.model} pruned once, global, activation-aware; WER on {' + '.join(SPLITS)}")
        for block, sparsity in REFIT_SETTINGS:
            plain, refit = (
                wer(PruneConfig(sparsity, 0.0, 0.0, 1, "global", block, "activation", **kw))[0]
                for kw in ({}, {"reconstruct": True})
            )
            print(
                f"{block[0]}x{block[1]} {sparsity:.0%}: WER {plain:.2%} as pruned, "
                f"{refit:.2%} re-fitted"
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
