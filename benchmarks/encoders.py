"""Encoder choice: the causal LSTM against the causal Conformer, same data, recipe and size.

Issue 2 asks to choose the streaming encoder "by measured accuracy/speed". Both arms are trained
by the project's own trainer on the same corpus, in the same batches and with the same schedule
(``configs/encoders/{lstm,conformer}.yaml``: the ``small`` recipe, 3 epochs), at about the same
parameter count. For each arm the benchmark then measures:

- **accuracy**: the blank penalty is tuned on ``dev`` (beam search, as `edgeasr tune-decoding`
  does and stores in the package), then WER on ``test`` (unseen voices) and ``test_xengine``
  (an engine held out of training) at that penalty;
- **speed on the device runtime**: both models exported to ONNX (fp32 and dynamic int8) and run
  by onnxruntime on one thread, encoder chunks of 320 ms with carried state, over the same test
  utterances, the two arms interleaved utterance by utterance; real-time factor and the ratio;
- **cost by shape**: parameters, multiply-adds per second of audio (machine-independent), and the
  training seconds per step from the run's own log.

Training runs already in ``--runs`` are resumed (a finished run is reused as is), so an
interrupted benchmark picks up where it stopped. Writes docs/results/encoders.{md,json,png}.

    .venv/bin/python benchmarks/encoders.py --corpus data/corpus
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO_ROOT,
    ResultsPage,
    benchmark_parser,
    even_subset,
    limit_threads,
    markdown_table,
    num,
    pct,
    set_torch_threads,
    shown_path,
    slug,
    wer_of,
)

log = logging.getLogger("encoders")

DEFAULT_ARMS = "LSTM=configs/encoders/lstm.yaml,Conformer=configs/encoders/conformer.yaml"
CHUNK_FRAMES = 32  # 320 ms of 10 ms fbank frames per encoder call, as the runtime streams


def train_arm(cfg_path: Path, corpus: Path, run: Path, max_steps: int) -> Path:
    """Train (or resume, or reuse) one arm; returns its best model package."""
    from edgeasr.train.config import load_experiment
    from edgeasr.train.trainer import Trainer

    cfg = load_experiment(cfg_path)
    if max_steps:
        cfg.train.max_steps = max_steps
    return Trainer(cfg, corpus, run).fit()


def training_facts(run: Path) -> dict[str, Any]:
    """Steps, wall seconds, the logged training loss and the greedy dev WER per epoch, from the
    run's ``metrics.jsonl``."""
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "dev_wer" in r]
    last = records[-1]
    return {
        "steps": int(last["step"]),
        "train_s": float(last["elapsed_s"]),
        "s_per_step": float(last["elapsed_s"]) / max(int(last["step"]), 1),
        "loss_curve": [[r["step"], r["loss"]] for r in records if "loss" in r],
        "dev_wer_per_epoch": [r["dev_wer"] for r in epochs],
    }


def tune_penalty(
    best: Path, dev_cache: Any, penalties: Sequence[float], beam: int, max_utts: int
) -> dict[str, Any]:
    """Sweep the blank penalty on dev, store the best in the package (as tune-decoding does)."""
    from edgeasr.decode import tune_blank_penalty

    chosen, sweep = tune_blank_penalty(best, dev_cache, list(penalties), beam, max_utts)
    return {"blank_penalty": chosen, "dev_sweep": sweep, "wer_dev": sweep[chosen]}


def shape_facts(best: Path) -> dict[str, Any]:
    from edgeasr.model.checkpoint import load_package

    model, _, _ = load_package(best)
    frame_s = model.cfg.subsampling * 0.01
    return {
        "params": model.num_params(),
        "encoder_params": sum(p.numel() for p in model.encoder.parameters()),
        "model_bytes": (best / "model.safetensors").stat().st_size,
        "frame_ms": round(1000 * frame_s),
        "macs_per_s": model.encoder.frame_macs() / frame_s,
    }


def time_encoders(
    packages: dict[str, Path], cache: Any, n_utts: int, variant: str
) -> dict[str, dict[str, float]]:
    """Single-thread streaming encoder time of every arm over the same utterances, interleaved
    (the arm that goes first alternates), so machine drift hits both alike."""
    from edgeasr.runtime.onnx_model import OnnxTransducer
    from edgeasr.runtime.package import load_runtime_package

    models = {a: OnnxTransducer(load_runtime_package(p), variant, 1) for a, p in packages.items()}
    spent = dict.fromkeys(models, 0.0)
    audio_s = 0.0
    utts = even_subset(cache.utts, n_utts)
    sub = max(m.subsampling for m in models.values())
    for i, u in enumerate(utts):
        feats = cache.features(u)
        feats = feats[: len(feats) // sub * sub]
        audio_s += len(feats) * 0.01
        order = list(models) if i % 2 == 0 else list(reversed(models))
        for arm in order:
            m, state = models[arm], None
            t = time.perf_counter()
            for s in range(0, len(feats), CHUNK_FRAMES):
                _, state = m.encode_chunk(feats[s : s + CHUNK_FRAMES], state)
            spent[arm] += time.perf_counter() - t
    return {a: {"rtf": spent[a] / audio_s, "audio_s": audio_s} for a in models}


def final_loss(arm: dict[str, Any]) -> float | None:
    """The last logged training loss (logged every 50 steps: none in smoke runs)."""
    curve = arm["training"]["loss_curve"]
    return curve[-1][1] if curve else None


def plot(arms: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in arms.items():
        curve = r["training"]["loss_curve"]  # logged every 50 steps: empty in smoke runs
        a0.plot([c[0] for c in curve], [c[1] for c in curve], label=name)
    ctc_end = {r["ctc_warmup_steps"] for r in arms.values()}
    for x in ctc_end:
        a0.axvline(x, color="k", ls="--", lw=0.8)
    a0.set_xlabel("step (dashed: end of the CTC-only warm-up)")
    a0.set_ylabel("training loss per utterance")
    a0.set_title("training loss")
    a0.grid(alpha=0.3)
    a0.legend()
    names = list(arms)
    width = 0.38
    for j, variant in enumerate(("fp32", "int8")):
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        a1.bar(xs, [1000 * arms[n]["rtf"][variant] for n in names], width, label=variant)
    a1.set_xticks(range(len(names)), names)
    a1.set_ylabel("encoder time per second of audio (ms), 1 thread")
    a1.set_title("streaming encoder on onnxruntime")
    a1.grid(alpha=0.3, axis="y")
    a1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_arms(spec: str) -> dict[str, Path]:
    """``NAME=CONFIG,NAME=CONFIG`` (relative paths from the repository root) → {name: path}."""
    arms = {}
    for part in spec.split(","):
        name, sep, path = part.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--arms: expected NAME=CONFIG, got {part!r}")
        arms[name.strip()] = REPO_ROOT / path.strip()
    if len(arms) != 2:
        raise SystemExit("--arms: name exactly two arms, the baseline first")
    return arms


def choose(arms: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The encoder to ship: lower dev WER (dev chooses; test only reports). Within 2 % relative
    of each other, the faster one on int8 wins."""
    a, b = sorted(arms, key=lambda n: arms[n]["wer_dev"])
    wa, wb = arms[a]["wer_dev"], arms[b]["wer_dev"]
    if wb <= wa * 1.02:
        fast = min((a, b), key=lambda n: arms[n]["rtf"]["int8"])
        return fast, f"dev WER within 2% relative ({pct(wa, 2)} vs {pct(wb, 2)}); faster on int8"
    return a, f"lower dev WER ({pct(wa, 2)} vs {pct(wb, 2)})"


def main(argv: Sequence[str] | None = None) -> int:
    p = benchmark_parser(__doc__, "encoders")
    p.add_argument("--runs", type=Path, default=Path("runs/encoders"), help="training runs")
    p.add_argument("--arms", default=DEFAULT_ARMS, help="NAME=CONFIG,NAME=CONFIG, baseline first")
    p.add_argument("--penalties", default="0,1,2,3", help="blank penalties tried on dev")
    p.add_argument("--dev-utts", type=int, default=300, help="dev utterances for tuning")
    p.add_argument("--max-utts", type=int, default=0, help="test utterances per split (0: all)")
    p.add_argument("--rtf-utts", type=int, default=100, help="test utterances timed")
    p.add_argument("--max-steps", type=int, default=0, help="cap training (smoke runs only)")
    args = p.parse_args(argv)
    limit_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from edgeasr.export.onnx import export_model_dir
    from edgeasr.train.config import load_experiment
    from edgeasr.train.data import FeatureCache, cuts_path

    feats_dir = args.corpus / "feats"
    caches = {
        s: FeatureCache.build(cuts_path(args.corpus, s), feats_dir)
        for s in ("dev", "test", "test_xengine")
    }
    penalties = [float(x) for x in args.penalties.split(",")]
    arms: dict[str, dict[str, Any]] = {}
    packages: dict[str, Path] = {}
    for name, cfg_path in parse_arms(args.arms).items():
        run = args.runs / slug(name)
        set_torch_threads(2)
        log.info("arm %s: training (or resuming) in %s", name, run)
        best = train_arm(cfg_path, args.corpus, run, args.max_steps)
        set_torch_threads(1)
        cached = run / "bench.json"
        if cached.exists():
            r = json.loads(cached.read_text())
        else:
            r = {"config": shown_path(cfg_path), **shape_facts(best)}
            r.update(tune_penalty(best, caches["dev"], penalties, args.beam, args.dev_utts))
            test = {s: caches[s] for s in ("test", "test_xengine")}
            r.update(wer_of(best, test, args.beam, args.max_utts))
            cached.write_text(json.dumps(r, indent=1) + "\n")
        r["training"] = training_facts(run)
        r["ctc_warmup_steps"] = load_experiment(cfg_path).train.ctc_warmup_steps
        packages[name] = export_model_dir(best, run / "runtime", int8=True)
        arms[name] = r
    for variant in ("fp32", "int8"):
        for name, t in time_encoders(packages, caches["test"], args.rtf_utts, variant).items():
            arms[name].setdefault("rtf", {})[variant] = t["rtf"]
    chosen, why = choose(arms)

    page = ResultsPage(args.name, "Encoder choice: causal LSTM vs causal Conformer")
    configs = ", ".join(f"{n}: `{arms[n]['config']}`" for n in arms)
    page.add(
        f"Corpus `{args.corpus}`; configs {configs}. With the default configs both arms use "
        "the `small` training recipe (AdamW, LR 2e-3, 400 warm-up steps, CTC warm-up, "
        "SpecAugment, the same batches from the same seed) for 3 epochs, and the same stateless "
        "predictor and joiner; only the encoder differs. Both encoders are causal, with "
        "look-ahead only inside one stacking window, and stream with carried state (the "
        "Conformer: cached keys/values of its left context and the convolution's left input). "
        "The recipe was tuned for the LSTM earlier and is not re-tuned for the Conformer."
    )
    page.add(
        f"WER: beam {args.beam}, blank penalty tuned per model on {args.dev_utts} dev "
        f"utterances over {{{args.penalties}}}. Speed: onnxruntime, 1 thread, "
        f"{CHUNK_FRAMES * 10} ms chunks, {args.rtf_utts} test utterances, arms interleaved; "
        "RTF = encoder time / audio time (the search after the encoder is the same for both)."
    )
    rows = []
    for name, r in arms.items():
        t = r["training"]
        rows.append(
            [
                name,
                f"{r['params'] / 1e6:.2f}M ({r['encoder_params'] / 1e6:.2f}M)",
                f"{r['macs_per_s'] / 1e6:.0f}",
                f"{t['steps']} / {t['s_per_step']:.2f} s",
                f"{r['blank_penalty']:g}",
                pct(r["wer_dev"], 2),
                pct(r["wer_test"], 2),
                pct(r["wer_test_xengine"], 2),
                num(r["rtf"]["fp32"], 4),
                num(r["rtf"]["int8"], 4),
            ]
        )
    page.add(
        markdown_table(
            [
                "encoder",
                "params (encoder)",
                "M MACs / s audio",
                "train steps / s per step",
                "blank penalty",
                "dev WER",
                "test WER",
                "test_xengine WER",
                "RTF fp32",
                "RTF int8",
            ],
            rows,
        )
    )
    (base_name, base), (cand_name, cand) = arms.items()

    def ratio(f: Any) -> str:
        return f"×{f(cand) / f(base):.2f}"

    page.add(
        f"{cand_name} / {base_name}, same run: "
        f"test WER {ratio(lambda r: r['wer_test'])}, "
        f"test_xengine WER {ratio(lambda r: r['wer_test_xengine'])}, "
        f"encoder time fp32 {ratio(lambda r: r['rtf']['fp32'])}, "
        f"int8 {ratio(lambda r: r['rtf']['int8'])}, "
        f"multiply-adds {ratio(lambda r: r['macs_per_s'])}, "
        f"training time per step {ratio(lambda r: r['training']['s_per_step'])} "
        "(training seconds come from each run's own log and include anything else the machine "
        "was doing then; the RTF ratios are the interleaved, like-for-like ones)."
    )
    page.add(
        "Greedy dev WER after each epoch (the trainer's own evaluation; the first epochs are "
        "CTC-only warm-up, where the transducer is untrained): "
        + "; ".join(
            f"{n} " + " / ".join(pct(w) for w in r["training"]["dev_wer_per_epoch"])
            for n, r in arms.items()
        )
        + ". Training loss at the end of each run: "
        + "; ".join(f"{n} {num(final_loss(r), 1)}" for n, r in arms.items())
        + "."
    )
    page.add(f"**Chosen: {chosen}** — {why}.")
    page.add("![training loss and encoder speed](encoders.png)")
    page.data = {"arms": arms, "chosen": chosen, "reason": why}
    print(page.markdown())
    md, _ = page.write(args.out_dir)
    plot(arms, md.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
