"""Probe: why shallow fusion recovers so few context names (the biasing page's dev sets).

Three measurements, on the biasing benchmark's dev material (``benchmarks/biasing.py`` builds
and caches it: the corpus' dev split plus synthesised long-tail and held-out name sentences):

- ``gap``: for name utterances, how far the reference (name spelt right) scores below the
  model's unbiased 1-best, log P(1-best | x) - log P(reference | x), both by the exact RNN-T
  forward sum. A bonus can only flip an utterance whose gap it exceeds; a negative gap is a
  search error (the reference is likelier than what beam search returned).
- ``beam``: name recall and no-name WER of the device runtime with shallow fusion at beam 4, 8
  and 16 (is the beam pruning the names away?).
- ``alias``: each name said alone ("call NAME") by four *training* voices, decoded: how often
  the unbiased 1-best of a dev utterance contains one of those renderings (an "acoustic alias",
  a candidate for biasing towards what the model hears rather than the spelling).

    .venv/bin/python scripts/probe_biasing_limits.py gap --n 60
    .venv/bin/python scripts/probe_biasing_limits.py beam
    .venv/bin/python scripts/probe_biasing_limits.py alias
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import biasing as B  # noqa: E402

from edgeasr.decode import Transcriber  # noqa: E402
from edgeasr.features import compute_fbank  # noqa: E402
from edgeasr.losses.rnnt import joint_logprobs, rnnt_loss_from_logprobs  # noqa: E402
from edgeasr.tokenizer import BLANK_ID  # noqa: E402


def dev_items(corpus: Path) -> list[B.Item]:
    items, _ = B.build_items(corpus, corpus / "biasing", ["dev"], "dev", 150, 0, 100, "dev")
    return items


@torch.inference_mode()
def log_prob(model, enc: torch.Tensor, tokens: list[int]) -> float:
    """log P(tokens | encoder output), the full RNN-T sum over alignments."""
    t = torch.tensor([tokens], dtype=torch.long)
    dec = model.joiner.dec_proj(model.predictor(t))
    lat = joint_logprobs(
        model.joiner, enc, dec, t, model.cfg.vocab_size, BLANK_ID, model.joint_max_elements
    )
    frames, labels = torch.tensor([enc.shape[1]]), torch.tensor([len(tokens)])
    return -float(rnnt_loss_from_logprobs(lat.blank, lat.label, frames, labels)[0])


def gap(args: argparse.Namespace, tr: Transcriber, items: list[B.Item]) -> None:
    names = [it for it in items if it.set != B.NO_NAME]
    rng = np.random.default_rng(0)
    pick = [names[i] for i in rng.choice(len(names), size=min(args.n, len(names)), replace=False)]
    m, tok = tr.model, tr.tokenizer
    rows: dict[str, list[tuple[float, int]]] = {}
    for it in pick:
        f = torch.from_numpy(compute_fbank(it.samples))[None]
        with torch.inference_mode():
            enc = m.encode(f, torch.tensor([f.shape[1]]))[0]
        hyp = tr.decode_features(f[0].numpy())[0].tokens
        g = log_prob(m, enc, hyp) - log_prob(m, enc, tok.encode(it.text))
        n_tok = sum(len(tok.encode(n)) for n in it.targets)
        rows.setdefault(it.set, []).append((g, n_tok))
        print(f"{it.set:20s} gap {g:7.2f}  {it.text} || {tok.decode(hyp)}")
    for s, r in rows.items():
        g = np.array([x for x, _ in r])
        per = np.array([x / max(n, 1) for x, n in r])
        q = np.percentile(g, [25, 50, 75]).round(1)
        print(
            f"{s}: n {len(g)}, gap quartiles {q}, median per name token {np.median(per):.2f}, "
            f"reference likelier than the 1-best in {int((g < 0).sum())}"
        )


def beam(args: argparse.Namespace, items: list[B.Item]) -> None:
    from edgeasr.export.onnx import export_model_dir
    from edgeasr.runtime import Recognizer, load_runtime_package
    from edgeasr.runtime.endpoint import NEVER

    sel = [it for it in items if it.set != B.NO_NAME]
    sel += [it for it in items if it.set == B.NO_NAME][: args.no_name]
    with tempfile.TemporaryDirectory() as tmp:
        pkg = load_runtime_package(export_model_dir(args.model, Path(tmp) / "onnx", int8=False))
        for width, boost in [(4, 0.0), (4, args.boost), (8, args.boost), (16, args.boost)]:
            rec = Recognizer(
                pkg, "fp32", beam=width, num_threads=1, endpoint=NEVER, context_boost=boost
            )
            hyps, _ = B.decode_all(rec, sel, boost > 0, 5120, f"beam {width}")
            sets = B.summarize_sets(sel, hyps, B.FINAL)
            cells = [
                f"{s}: recall {100 * v['recall']:.1f}%" if v["recall"] is not None else
                f"{s}: WER {100 * v['wer']:.2f}%"
                for s, v in sets.items()
            ]  # fmt: skip
            print(f"beam {width:2d} boost {boost:g} | " + " | ".join(cells))


def alias(args: argparse.Namespace, tr: Transcriber, items: list[B.Item]) -> None:
    from edgeasr.corpus.extra import (
        corpus_config,
        load_flac,
        render_jobs,
        split_voices,
        synth_config,
    )
    from edgeasr.corpus.synth import plan_job
    from edgeasr.corpus.text import Utterance
    from edgeasr.search.beam import modified_beam_search, nbest

    names = sorted({n for it in items for n in it.targets})
    info = corpus_config(args.corpus)
    cfg = synth_config(info)
    by_engine: dict[str, list] = {}
    for v in split_voices(info, "train", cfg.holdout_engine):
        by_engine.setdefault(v.engine, []).append(v)
    rng = random.Random(0)
    voices = [rng.choice(by_engine[e]) for e in sorted(by_engine) for _ in range(2)]
    jobs = [
        plan_job(cfg, "alias", 10 * i + k, Utterance(f"call {n}", (f"call {n}",), 0), [v], False)
        for i, n in enumerate(names)
        for k, v in enumerate(voices)
    ]
    aliases: dict[str, Counter] = {n: Counter() for n in names}
    for rec in render_jobs(args.corpus / "biasing" / "alias", "alias", jobs):
        enc = tr.scorer.encode(compute_fbank(load_flac(rec["path"])))
        state = modified_beam_search(tr.scorer, enc, beam=8, blank_penalty=tr.blank_penalty)
        for h in nbest(state)[:3]:
            words = tr.tokenizer.decode(h.tokens).split()
            if words[:1] == ["call"] and len(words) > 1:
                aliases[rec["text"].split(" ", 1)[1]][" ".join(words[1:])] += 1
    exact = via_alias = total = 0
    for it in items:
        if it.set == B.NO_NAME:
            continue
        hyp = f" {tr.transcribe(it.samples)} "
        for n in it.targets:
            total += 1
            exact += f" {n} " in hyp
            via_alias += f" {n} " not in hyp and any(f" {a} " in hyp for a in aliases[n] if a != n)
    print(f"{len(names)} names, {len(voices)} voices: {voices}")
    print(f"name occurrences {total}: spelt right in the 1-best {exact}, an alias {via_alias}")
    for n in names[:20]:
        print(n, dict(aliases[n].most_common(5)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=("gap", "beam", "alias"))
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "corpus")
    p.add_argument("--model", type=Path, default=REPO / "models" / "edgeasr-small-en")
    p.add_argument("--n", type=int, default=60, help="gap: name utterances to score")
    p.add_argument("--boost", type=float, default=1.0, help="beam: shallow-fusion boost")
    p.add_argument("--no-name", type=int, default=150, help="beam: no-name utterances")
    args = p.parse_args()
    torch.set_num_threads(2)
    items = dev_items(args.corpus)
    if args.what == "beam":
        beam(args, items)
        return 0
    tr = Transcriber.from_dir(args.model)
    (gap if args.what == "gap" else alias)(args, tr, items)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
