"""Probe: can the acoustic model tell a contact's name from the other names of the contact list?

Shallow fusion (benchmarks/biasing.py) can only pick a context name that the model itself finds
likely enough. This probe asks the model directly, without search: for every biasing-benchmark
utterance with one context name, it scores the reference transcript with the true name and with
that name replaced by each other name of the utterance's contact list (full RNN-T sequence
log-likelihood, all alignments), and reports how often the true name ranks first. With
``--ilm`` weights it also ranks by log P(y|x) − λ·log P_ILM(y), the model's internal language
model (joiner fed the encoder projection's bias only, blank excluded) subtracted, which undoes the
model's prior towards names it heard in training.

Reads the benchmark's cached eval sets (run benchmarks/biasing.py once first).

    .venv/bin/python scripts/probe_name_slots.py --side dev --ilm 0 0.5 1
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from biasing import NAME_SETS, build_items  # noqa: E402

from edgeasr.features import compute_fbank  # noqa: E402
from edgeasr.losses.rnnt import joint_logprobs, rnnt_loss_from_logprobs  # noqa: E402
from edgeasr.model.checkpoint import load_package  # noqa: E402


def _targets(tok, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [tok.encode(t) for t in texts]
    width = max(len(i) for i in ids)
    return torch.tensor([i + [0] * (width - len(i)) for i in ids]), torch.tensor(
        [len(i) for i in ids]
    )


@torch.inference_mode()
def sequence_scores(model, tok, enc: torch.Tensor, texts: list[str]) -> np.ndarray:
    """log P(text | audio) for each text, summed over all alignments."""
    tg, lens = _targets(tok, texts)
    dec = model.joiner.dec_proj(model.predictor(tg))
    e = enc.expand(len(texts), -1, -1)
    lat = joint_logprobs(model.joiner, e, dec, tg, model.cfg.vocab_size, 0, 1 << 24)
    frames = torch.full((len(texts),), enc.shape[1])
    return (-rnnt_loss_from_logprobs(lat.blank, lat.label, frames, lens)).numpy()


@torch.inference_mode()
def ilm_scores(model, tok, texts: list[str]) -> np.ndarray:
    """Internal-LM log-probability of each text: the joiner without acoustics, blank excluded."""
    tg, lens = _targets(tok, texts)
    dec = model.joiner.dec_proj(model.predictor(tg))
    logits = model.joiner(model.joiner.enc_proj.bias, dec)
    logits[..., 0] = float("-inf")
    lp = logits.log_softmax(-1)[:, :-1].gather(-1, tg[..., None])[..., 0]
    mask = torch.arange(tg.shape[1])[None] < lens[:, None]
    return torch.where(mask, lp, 0.0).sum(1).numpy()  # padding is blank: -inf there


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "corpus")
    p.add_argument("--model", type=Path, default=REPO / "models" / "edgeasr-small-en")
    p.add_argument("--side", choices=("dev", "test"), default="dev")
    p.add_argument("--n-synth", type=int, default=150)
    p.add_argument("--ilm", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    args = p.parse_args()
    torch.set_num_threads(2)
    splits = ["dev"] if args.side == "dev" else ["test", "test_xengine"]
    items, _ = build_items(
        args.corpus, args.corpus / "biasing", splits, args.side, args.n_synth, 0, 100, args.side
    )
    model, tok, _ = load_package(args.model)
    model.eval()
    ranks: dict[float, dict[str, list[int]]] = {lam: defaultdict(list) for lam in args.ilm}
    for it in items:
        if it.set not in NAME_SETS or len(it.targets) != 1:
            continue
        name = it.targets[0]
        others = [d for d in it.context if d != name]
        texts = [it.text] + [re.sub(rf"\b{re.escape(name)}\b", d, it.text) for d in others]
        feats = torch.from_numpy(compute_fbank(it.samples))[None]
        enc, _, _ = model.encode(feats, torch.tensor([feats.shape[1]]))
        ll, ilm = sequence_scores(model, tok, enc, texts), ilm_scores(model, tok, texts)
        for lam in args.ilm:
            v = ll - lam * ilm
            ranks[lam][it.set].append(int((v[1:] > v[0]).sum()))
    print("| ILM weight | " + " | ".join(f"{s}: true name first / top 3" for s in NAME_SETS) + " |")
    print("|---" * (len(NAME_SETS) + 1) + "|")
    for lam, by_set in ranks.items():
        cells = [
            f"{np.mean(np.array(r) == 0):.1%} / {np.mean(np.array(r) < 3):.1%} (n={len(r)})"
            if (r := by_set.get(s))
            else "–"
            for s in NAME_SETS
        ]
        print(f"| {lam:g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
