"""Write a model package's card (README.md) from the files its recipe produced.

Usage:
    .venv/bin/python scripts/model_card.py --package models/edgeasr-small-en --run runs/small \
        --corpus data/corpus --decode data/corpus/decode --config configs/small.yaml

Every number on the card is read from those files (run metrics, the package manifest, the corpus
summary, `edgeasr decode` summaries), so the card cannot drift from what the commands produced.

A model trained in stages (a CPU run, then continued on a lent GPU) has a ``training.json`` in
its package: one entry per stage with its command, commit, machine, epochs, steps and time,
written from each stage's run metrics when the stage ran. The card then lists the stages instead
of reading ``--run``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _endpoint_section(ep: dict | None) -> str:
    """The end-of-query classifier and end-pointer settings, if the package has them."""
    if not ep:
        return ""
    info = ep["info"]
    rows = []
    for name, st in (("rule only", info["dev_stats_rule_only"]), ("classifier", info["dev_stats"])):
        rows.append(
            f"| {name} | {1000 * st['final_p50']:.0f} / {1000 * st['final_p90']:.0f} ms | "
            f"{1000 * st['lead_p50']:.0f} ms | {100 * st['early_cutoff_rate']:.1f}% | "
            f"{100 * st['reset_rate']:.1f}% |"
        )
    return f"""
## End-of-query classifier (`{ep["classifier"]}`)
`edgeasr train-endpointer --corpus data/corpus --train-utts {info["train_utts"]}`: a 2-layer MLP
on [encoder output, decoder output of the best hypothesis, trailing non-speech] trained on
{info["train_frames"]:,} frames of {info["train_utts"]} training utterances streamed through the
runtime (label: after the corpus' true end of speech), frame accuracy on dev
{100 * info["dev_frame_accuracy"]:.1f}%. End-pointer settings tuned on dev ({info["dev_utts"]}
utterances; lowest final p90 with early cut-offs ≤ 2% and the speculative end ≥ 160 ms ahead),
both for the classifier and, as the baseline, for the rule alone:

| dev | final p50 / p90 after end of speech | speculative lead p50 | early cut-off | reset |
|---|---|---|---|---|
{chr(10).join(rows)}

Settings shipped: `{json.dumps(ep["config"])}`. Test-set numbers: `docs/results/endpoint.md`.
"""


def _biaser_section(b: dict | None) -> str:
    """The neural biasing module, if the package has one."""
    if not b:
        return ""
    info = b["info"]
    cfg = info["config"]
    return f"""
## Neural biasing module (`{b["file"]}`)
A tree-constrained pointer generator (`edgeasr.model.biaser`, {json.dumps(b["config"])}) on the
frozen joiner: with a context list, it points at the tokens that continue a listed word and a
learned gate mixes that into the model's distribution. `edgeasr train-biaser --corpus
data/corpus --names {cfg["names"]} --synth-utts {cfg["synth_utts"]} --plain-utts
{cfg["plain_utts"]} --epochs {cfg["epochs"]} --seed {cfg["seed"]}`: {info["train_utts"]} training
utterances ({info["train_utts_with_name"]} with a made-up surname, rendered by training voices;
the rest ordinary requests with distractor-only lists), {info["total_s"] / 60:.1f} min on
{info["threads"]} CPU threads. Loss per token on {info["held_utts"]} held-back made-up-name
utterances: {info["held_loss_per_token_unbiased"]:.3f} without the module,
{info["held_loss_per_token_biased"]:.3f} with it. No long-tail or held-out name of the biasing
benchmark was in its material. Test-set numbers: `docs/results/biasing-neural.md`.
"""


def _stages_section(stages: list[dict]) -> str:
    """The training stages of a model trained in several runs, each from the last one's weights."""
    lines = [f"{len(stages)} stages, each starting from the weights the one before ended with:"]
    for i, st in enumerate(stages, 1):
        lines.append(
            f"{i}. `{st['command']}` (commit {st['commit']}) — {st['epochs']} epochs, "
            f"{st['steps']:,} steps of at most {st['max_frames']:,} frames, "
            f"{st['train_s'] / 60:.1f} min on {st['machine']}. {st.get('note', '')}".rstrip()
        )
    return "\n".join(lines)


def _decoding_title(decoding: dict) -> str:
    beam = decoding.get("beam", 4)
    title = f"modified beam search, beam {beam}, blank penalty {decoding.get('blank_penalty', 0.0)}"
    if decoding.get("ctc_weight") or decoding.get("word_bonus"):
        title += (
            f"; second pass: CTC weight {decoding.get('ctc_weight', 0.0)}, word bonus "
            f"{decoding.get('word_bonus', 0.0)}"
        )
    return title


def _decoding_section(decoding: dict, package: Path) -> str:
    """How the decoding settings were chosen, with every dev WER of the sweeps."""
    sweep = ", ".join(f"{k}: {100 * v:.1f}%" for k, v in decoding.get("sweep", {}).items())
    text = (
        f"The blank penalty was chosen on `{decoding.get('tuned_on', '-')}` by "
        f"`edgeasr tune-decoding --corpus data/corpus --model {package}` (dev WER per penalty, "
        f"beam 4: {sweep})."
    )
    rs = decoding.get("rescoring")
    if not rs:
        return text
    grid = {tuple(float(x) for x in k.split(":")): v for k, v in rs["sweep"].items()}
    weights = sorted({w for w, _ in grid})
    bonuses = sorted({b for _, b in grid})
    table = ["| CTC weight \\ word bonus | " + " | ".join(f"{b:g}" for b in bonuses) + " |"]
    table.append("|---" * (len(bonuses) + 1) + "|")
    for w in weights:
        cells = [f"{100 * grid[(w, b)]:.2f}%" if (w, b) in grid else "–" for b in bonuses]
        table.append(f"| {w:g} | " + " | ".join(cells) + " |")
    return (
        text
        + f"""

Second pass (`edgeasr.search.rescore`): once an utterance is over, the beam's N-best is
reranked by log P_rnnt + w · log P_ctc (this model's CTC head) + b · words. `w`, `b` and the
beam were chosen on `{rs.get("tuned_on", "-")}` by the same command with
`--ctc-weights {",".join(f"{w:g}" for w in weights)} --word-bonuses {",".join(f"{b:g}" for b in bonuses)} --rescore-beam {rs["beam"]}`;
dev WER at beam {rs["beam"]} (w = 0, b = 0 is the first pass alone):

"""
        + "\n".join(table)
        + """

Decoding defaults to these settings (the device runtime's too); `--ctc-weight 0 --word-bonus 0`
turns the second pass off."""
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--package", type=Path, required=True)
    ap.add_argument("--run", type=Path, help="the run dir (single-stage models)")
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--decode", type=Path, required=True)
    ap.add_argument("--config", type=Path, required=True)
    args = ap.parse_args()

    manifest = json.loads((args.package / "manifest.json").read_text())
    corpus = json.loads((args.corpus / "corpus.json").read_text())
    history_file = args.package / "training.json"
    stages = json.loads(history_file.read_text()) if history_file.exists() else None
    if stages is None and args.run is None:
        ap.error(f"--run is needed: {history_file} does not exist")
    epochs = []
    if args.run is not None:
        metrics = [json.loads(x) for x in (args.run / "metrics.jsonl").read_text().splitlines()]
        epochs = [m for m in metrics if "dev_wer" in m]
    info = manifest.get("info", {})
    decoding = manifest.get("decoding", {})
    size = (args.package / "model.safetensors").stat().st_size
    rows = []
    # the first pass alone at beam 4 (what the package decoded before its second pass was
    # tuned), where `edgeasr decode ... --out DECODE/SPLIT-beam-one-pass` wrote it
    one_pass = {
        split: json.loads(f.read_text())["wer"]
        for split in ("dev", "test", "test_xengine")
        if (f := args.decode / f"{split}-beam-one-pass" / "summary.json").exists()
    }
    for split in ("dev", "test", "test_xengine"):
        f = args.decode / f"{split}-beam" / "summary.json"
        if f.exists():
            s = json.loads(f.read_text())
            row = f"| {split} | {s['num_utts']} | {s['num_ref_words']} | {100 * s['wer']:.2f}% |"
            if one_pass:
                row += f" {100 * one_pass[split]:.2f}% |" if split in one_pass else " – |"
            rows.append(row)
    header = "| split | utterances | words | WER |"
    if one_pass:
        header += " first pass alone, beam 4 |"
    rule = "|---" * (header.count("|") - 1) + "|"
    if one_pass:
        one_pass_cmd = (
            "\nFirst pass alone: the same with `--beam 4 --ctc-weight 0 --word-bonus 0 --out "
            f"{args.decode}/SPLIT-beam-one-pass` (the decoding before the second pass was "
            "tuned).\n"
        )
    else:
        one_pass_cmd = ""
    train_cfg = info.get("experiment", {}).get("train", {})
    if stages:
        n_epochs = stages[-1]["epochs"]
        training = _stages_section(stages)
    else:
        n_epochs = len(epochs)
        train_s = epochs[-1]["elapsed_s"] if epochs else float("nan")
        training = f"""`edgeasr train --config {args.config} --corpus data/corpus --out {args.run}` —
{len(epochs)} epochs, {epochs[-1]["step"] if epochs else 0} steps, {train_s / 60:.1f} min on
{_cpu()} (2 threads, CPU only). The first `ctc_warmup_steps` train the encoder with CTC alone."""
    endpoint = _endpoint_section(manifest.get("endpoint"))
    biaser = _biaser_section(manifest.get("biaser"))
    card = f"""# edgeasr-small-en

A streaming RNN-T (transducer) for English voice-assistant requests, trained only on synthetic
speech made by this repository. Weights: `model.safetensors`; vocabulary: `tokenizer.model`
(sentencepiece BPE, id 0 = blank); `manifest.json` holds the format version and SHA-256 of each
file, checked on load.

## Model
- Parameters: {manifest["num_params"]:,} ({size / 1e6:.1f} MB fp32 safetensors)
- Config: `{args.config}` — {json.dumps(manifest["model_config"])}
- Input: 80-dim log-mel fbank (kaldi-native-fbank, 25/10 ms, floored at one 16-bit LSB of
  white noise), global mean/variance normalisation stored in the weights.
- Encoder: 4 frames stacked (40 ms), causal LSTMs, a second 2x time reduction after the first
  layer (80 ms output frames), no look-ahead beyond one stacking window. Stateless predictor
  (2-token context), additive joiner. A CTC head on the encoder: an auxiliary loss in training
  and the second decoding pass (below).
- Why an LSTM: a causal Conformer of the same size, trained with the same recipe, was far behind
  it and slower on the device runtime (`benchmarks/encoders.py`, `docs/results/encoders.md`).
- Chosen epoch: {info.get("epoch")} of {n_epochs}{" of the last stage" if stages else ""} (lowest dev WER, greedy, {info.get("dev_wer", 0) * 100:.2f}%{f" on {train_cfg['dev_max_utts']} dev utterances" if stages else ""}).

## Data
`edgeasr corpus synth --out data/corpus --hours {corpus["config"]["hours"]:g} --seed {corpus["seed"]}`:
{corpus["utterances"]["train"]} training utterances ({corpus["hours"]["train"]:.1f} h) from
{len(corpus["voices"]["train"])} voices of engines {", ".join(corpus["engines"]["train"])}.
Test voices never occur in training (`test`: {len(corpus["voices"]["test"])} voices of
{", ".join(corpus["engines"]["test"])}); `test_xengine` uses an engine held out entirely
({", ".join(corpus["engines"]["test_xengine"])}).

## Training
{training}
Augmentation: SpecAugment {json.dumps(train_cfg.get("spec_augment", {}))}.

## Word error rate ({_decoding_title(decoding)})
{_decoding_section(decoding, args.package)}
`edgeasr decode --corpus data/corpus --split SPLIT --model {args.package}`
{one_pass_cmd}
{header}
{rule}
{chr(10).join(rows)}

Real recorded speech and a comparison with pocketsphinx on the same audio:
`docs/results/accuracy.md`.
{endpoint}{biaser}
## Limits
Trained on synthetic voices and templated voice-assistant text only: expect much higher error on
real people, accents, children and open-domain sentences (see the benchmark page). The
project's target for this model is at most 5% WER on unseen synthetic voices; per-engine WER on
`docs/results/accuracy.md` shows where it stands (only four flite voices are in training, and
the test set's flite voice is not one of them).
"""
    (args.package / "README.md").write_text(card)


if __name__ == "__main__":
    main()
