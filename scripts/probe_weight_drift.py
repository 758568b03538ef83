"""Probe: how the original test's WER (overall and per TTS engine) responds to weight changes
that are not an update's trained result.

Two questions behind issue 6's forgetting bar:

- Is v0 fragile? ``--noise S:SEED ...`` adds Gaussian noise of S times each weight tensor's
  standard deviation (seeded) to the base model. If tiny random moves already cost the unseen
  voices, no update could meet a 2 % bar.
- Does averaging the weights over the last epochs help? ``--checkpoint RUN`` scores a training
  run's last checkpoint (``RUN/ckpt/last.safetensors``, the weights after the last step) and, if
  the run averaged (``train.average_last_epochs``), the running mean it kept beside it.

    .venv/bin/python scripts/probe_weight_drift.py --noise 0.01:1 0.01:2 0.05:1 0.05:2
    .venv/bin/python scripts/probe_weight_drift.py --checkpoint runs/x/full-fine-tune/v1

Each scored model is written as a package under ``--work`` (decoded with the base model's
tuned blank penalty, beam 4, the same decoding as benchmarks/diffs.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _common import even_subset, set_torch_threads, wer_of  # noqa: E402
from diffs import by_engine  # noqa: E402

from edgeasr.model.checkpoint import load_package, save_package, set_decoding_defaults  # noqa: E402
from edgeasr.train.data import FeatureCache, cuts_path  # noqa: E402


def noisy(weights: dict[str, torch.Tensor], scale: float, seed: int) -> dict[str, torch.Tensor]:
    """``weights`` with N(0, (scale · std)²) added to every trained tensor of more than one
    element (not the feature normalisation buffers, which no training moves)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, w in weights.items():
        if w.is_floating_point() and w.numel() > 1 and not name.startswith("feat_"):
            w = w + scale * w.std() * torch.randn(w.shape, generator=gen)
        out[name] = w
    return out


def checkpoint_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """A run's last checkpoint and, if it kept one, the running weight average (the mean of
    the trained tensors over the averaged steps; the others as in the checkpoint)."""
    last = load_file(str(run / "ckpt" / "last.safetensors"))
    out = {"last step": last}
    average = run / "ckpt" / "last.average.safetensors"
    if average.is_file():
        means = load_file(str(average))
        trained = {k.removeprefix("mean.model."): v for k, v in means.items()}
        out[f"average of {int(means['count'])} steps"] = {
            k: trained.get(k, v) for k, v in last.items()
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=Path("models/edgeasr-small-en"), help="v0")
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--noise", nargs="*", default=[], help="SCALE:SEED pairs")
    ap.add_argument("--checkpoint", type=Path, nargs="*", default=[], help="training run dirs")
    ap.add_argument("--work", type=Path, default=Path("runs/weight-drift"))
    args = ap.parse_args()
    set_torch_threads(2)
    model, tok, manifest = load_package(args.base)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    candidates: dict[str, dict[str, torch.Tensor]] = {"v0": base}
    for spec in args.noise:
        scale, seed = spec.split(":")
        candidates[f"v0 + noise {scale} (seed {seed})"] = noisy(base, float(scale), int(seed))
    for run in args.checkpoint:
        for kind, weights in checkpoint_weights(run).items():
            candidates[f"{run}: {kind}"] = weights
    test = FeatureCache.build(cuts_path(args.corpus, "test"), args.corpus / "feats")
    utts = even_subset(test.utts, 0)
    for i, (name, weights) in enumerate(candidates.items()):
        model.load_state_dict(weights)
        out = args.work / f"m{i}"
        save_package(model, tok, out, info={"probe": name})
        set_decoding_defaults(out, manifest.get("decoding", {}))
        res = wer_of(out, {"test": test}, 4, 0, ("test",))
        engines = by_engine(res["errors_test"], utts)
        split = ", ".join(f"{g} {w:.2%}" for g, w in engines.items())
        print(f"{name}: original test {res['wer_test']:.2%} ({split})", flush=True)


if __name__ == "__main__":
    main()
