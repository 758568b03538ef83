"""``edgeasr`` command line: corpus, train, decode, transcribe, export, stream, compress, pack,
simulate, diff, update."""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
corpus_app = typer.Typer(no_args_is_help=True, help="Synthetic corpus generation.")
app.add_typer(corpus_app, name="corpus")
diff_app = typer.Typer(no_args_is_help=True, help="Signed model diffs (server side).")
app.add_typer(diff_app, name="diff")
update_app = typer.Typer(no_args_is_help=True, help="The device's model store.")
app.add_typer(update_app, name="update")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@corpus_app.command("synth")
def corpus_synth(
    out: Annotated[Path, typer.Option(help="Output corpus directory.")],
    hours: Annotated[float, typer.Option(help="Hours of training audio.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Random seed (the corpus is deterministic).")] = 1,
    jobs: Annotated[int, typer.Option(help="Parallel synthesis workers.")] = 2,
    holdout_engine: Annotated[str, typer.Option(help="Engine kept out of training.")] = "festival",
    test_audio: Annotated[
        bool,
        typer.Option(
            help="Synthesise the test splits. --no-test-audio makes a training-only corpus "
            "(train and dev; train identical to the full corpus's) for a training machine."
        ),
    ] = True,
    pause_prosody: Annotated[
        str,
        typer.Option(
            help="How mid-sentence pauses are spoken: 'final' (each segment its own sentence) "
            "or 'continuing' (one espeak-ng call with timed breaks; other engines: 'final')."
        ),
    ] = "final",
) -> None:
    """Synthesise voice-assistant speech with every installed TTS voice, with lhotse manifests."""
    _setup_logging(True)
    from edgeasr.corpus.synth import corpus_synth_command

    corpus_synth_command(out, hours, seed, jobs, holdout_engine, test_audio, pause_prosody)


@corpus_app.command("updates")
def corpus_updates(
    out: Annotated[Path, typer.Option(help="Output directory (v1 … v5 inside).")] = Path(
        "data/updates"
    ),
    base_corpus: Annotated[Path, typer.Option(help="The base model's corpus (for replay).")] = Path(
        "data/corpus"
    ),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    jobs: Annotated[int, typer.Option(help="Parallel synthesis workers.")] = 2,
) -> None:
    """The five model-update corpora: new names, command types and voices per update."""
    _setup_logging(True)
    from edgeasr.corpus.updates import synthesize_updates

    try:
        summaries = synthesize_updates(out, base_corpus, seed, jobs=jobs)
    except FileNotFoundError as exc:
        _fail(str(exc))
    for s in summaries:
        typer.echo(f"v{s['update']} ({s['theme']}): {s['utterances']}")


@corpus_app.command("null-updates")
def corpus_null_updates(
    out: Annotated[Path, typer.Option(help="Output directory (v1 … v5 inside).")] = Path(
        "data/updates-null"
    ),
    updates: Annotated[Path, typer.Option(help="The update corpora to mirror.")] = Path(
        "data/updates"
    ),
    base_corpus: Annotated[Path, typer.Option(help="The base model's corpus.")] = Path(
        "data/corpus"
    ),
) -> None:
    """The control chain's corpora: every update's new material swapped for base utterances
    (same dev and test), to measure what fine-tuning alone does to the original test."""
    _setup_logging(True)
    from edgeasr.corpus.updates import null_updates

    try:
        summaries = null_updates(updates, out, base_corpus)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    for s in summaries:
        typer.echo(f"v{s['update']}: {s['utterances']}")


@app.command()
def train(
    config: Annotated[Path, typer.Option(help="Experiment YAML under configs/.")],
    corpus: Annotated[Path, typer.Option(help="Corpus directory from `corpus synth`.")],
    out: Annotated[Path, typer.Option(help="Run directory (resumes if it has a checkpoint).")],
    max_steps: Annotated[int, typer.Option(help="Stop after N steps (0: full run).")] = 0,
    epochs: Annotated[
        int,
        typer.Option(
            help="Override the config's epochs; on a finished run this continues "
            "training with the cosine schedule stretched to the new length."
        ),
    ] = 0,
) -> None:
    """Train a transducer; `torchrun --nproc-per-node N -m edgeasr.cli train ...` for DDP."""
    _setup_logging(True)
    from edgeasr.train.config import load_experiment
    from edgeasr.train.trainer import Trainer

    cfg = load_experiment(config)
    if max_steps:
        cfg.train.max_steps = max_steps
    if epochs:
        cfg.train.epochs = epochs
    best = Trainer(cfg, corpus, out).fit()
    typer.echo(f"best model package: {best}")


_GUARD_HELP = (
    "Routed models: with more than this many frames queued, take no branch slower than real "
    "time (a scheduling guard; negative: off). Default: the model's own (its config's "
    "guard_backlog_frames)."
)


def _guard(model, frames: float | None) -> None:
    """Override the amortized encoder's backlog guard (``AmortizedEncoder.guard_backlog_s``):
    None keeps the model's own, a negative number turns it off."""
    if frames is None:
        return
    from edgeasr.model.amortized import AmortizedEncoder

    if not isinstance(model.encoder, AmortizedEncoder):
        raise typer.BadParameter("only a routed (amortized) model has a backlog guard")
    model.encoder.guard_backlog_s = frames * model.encoder.frame_s if frames >= 0 else None


@app.command()
def decode(
    corpus: Annotated[Path, typer.Option(help="Corpus directory with manifests/.")],
    split: Annotated[str, typer.Option(help="Split name, e.g. test, test_xengine.")] = "test",
    model: Annotated[Path | None, typer.Option(help="Model package dir.")] = None,
    method: Annotated[str, typer.Option(help="greedy or beam.")] = "beam",
    beam: Annotated[
        int | None, typer.Option(help="Beam size (default: the package's tuned beam, or 4).")
    ] = None,
    blank_penalty: Annotated[
        float | None, typer.Option(help="Blank penalty (default: the package's tuned value).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write results.")] = None,
    guard_backlog_frames: Annotated[float | None, typer.Option(help=_GUARD_HELP)] = None,
    ctc_weight: Annotated[
        float | None,
        typer.Option(help="Second pass: CTC weight (default: the package's tuned value, or 0)."),
    ] = None,
    word_bonus: Annotated[
        float | None,
        typer.Option(help="Second pass: word bonus (default: the package's tuned value, or 0)."),
    ] = None,
) -> None:
    """Decode a cut set: per-utterance results (with N-best) and a WER summary."""
    _setup_logging(False)
    from edgeasr.decode import DEFAULT_MODEL_DIR, evaluate_cache, write_results
    from edgeasr.model.checkpoint import load_package, tuned_blank_penalty, tuned_rescorer
    from edgeasr.search.beam import tuned_beam
    from edgeasr.search.rescore import Rescorer
    from edgeasr.train.data import FeatureCache, cuts_path

    m, tok, manifest = load_package(model or DEFAULT_MODEL_DIR)
    _guard(m, guard_backlog_frames)
    if blank_penalty is None:
        blank_penalty = tuned_blank_penalty(manifest)
    if beam is None:
        beam = tuned_beam(manifest.get("decoding", {}))
    tuned = tuned_rescorer(manifest)
    try:
        rescorer = Rescorer(
            tuned.ctc_weight if ctc_weight is None else ctc_weight,
            tuned.word_bonus if word_bonus is None else word_bonus,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    cache = FeatureCache.build(cuts_path(corpus, split), Path(corpus) / "feats")
    ev = evaluate_cache(
        m, tok, cache, method=method, beam=beam, blank_penalty=blank_penalty, rescorer=rescorer
    )
    out_dir = out or Path(corpus) / "decode" / f"{split}-{method}"
    extra = {"split": split, "method": method, "beam": beam, "blank_penalty": blank_penalty}
    if method == "beam" and rescorer.enabled:
        extra.update(ctc_weight=rescorer.ctc_weight, word_bonus=rescorer.word_bonus)
    write_results(ev, out_dir, extra)
    typer.echo(
        f"{split}: WER {100 * ev.wer:.2f}% over {ev.num_utts} utterances "
        f"({ev.num_ref_words} words) -> {out_dir}"
    )


@app.command()
def simulate(
    corpus: Annotated[Path, typer.Option(help="Corpus directory with manifests/.")],
    model: Annotated[Path | None, typer.Option(help="Model package dir.")] = None,
    split: Annotated[str, typer.Option(help="Split name.")] = "test",
    device_mflops: Annotated[
        float, typer.Option(help="Simulated device speed, million FLOPs per second.")
    ] = 650.0,
    max_utts: Annotated[int, typer.Option(help="First N utterances only (0: all).")] = 0,
    guard_backlog_frames: Annotated[float | None, typer.Option(help=_GUARD_HELP)] = None,
) -> None:
    """Encoder cost and end-of-speech latency of a model on a simulated device, per split;
    for a routed model also those of a single encoder of the same average cost."""
    _setup_logging(False)
    from edgeasr.decode import DEFAULT_MODEL_DIR
    from edgeasr.model.checkpoint import load_package
    from edgeasr.model.cost import equal_cost_single, simulate_cache, speech_ends, summarize
    from edgeasr.train.data import FeatureCache, cuts_path

    m, _, _ = load_package(model or DEFAULT_MODEL_DIR)
    _guard(m, guard_backlog_frames)
    cuts = cuts_path(corpus, split)
    cache = FeatureCache.build(cuts, Path(corpus) / "feats")
    ends = speech_ends(cuts)
    sims = simulate_cache(m, cache, ends, device_mflops, max_utts)
    frame_s = m.cfg.subsampling * 0.01
    rows = {split: summarize(sims)}
    if rows[split]["fast_share"] > 0:  # routed: beside it, a single encoder of equal cost
        rows["equal-cost single"] = summarize(equal_cost_single(sims, ends, frame_s, device_mflops))
    typer.echo(
        f"| split | utts | MACs/frame ({1000 * frame_s:.0f} ms) | fast share | "
        f"busy/real time | latency p50 | p90 | max | end frame fast | it and the one before |\n"
        f"|---|---|---|---|---|---|---|---|---|---|"
    )
    for name, st in rows.items():
        typer.echo(
            f"| {name} | {st['utterances']} | {st['mean_macs_per_frame'] / 1e6:.2f} M | "
            f"{100 * st['fast_share']:.1f}% | {st['busy_ratio_mean']:.2f} | "
            f"{1000 * st['latency_p50_s']:.1f} ms | {1000 * st['latency_p90_s']:.1f} ms | "
            f"{1000 * st['latency_max_s']:.1f} ms | {100 * st['end_fast_share']:.1f}% | "
            f"{100 * st['end_pair_fast_share']:.1f}% |"
        )
    if "equal-cost single" in rows:  # issue 5's latency bar compares the two at p90
        routed, same = rows[split], rows["equal-cost single"]
        typer.echo(
            "equal-cost single encoder / routed model: "
            + ", ".join(
                f"{q} {same[f'latency_{q}_s'] / max(routed[f'latency_{q}_s'], 1e-9):.2f}x"
                for q in ("p50", "p90")
            )
        )


@app.command("tune-decoding")
def tune_decoding(
    corpus: Annotated[Path, typer.Option(help="Corpus directory with manifests/.")],
    model: Annotated[Path, typer.Option(help="Model package dir to tune (manifest updated).")],
    split: Annotated[str, typer.Option(help="Tuning split; never a test split.")] = "dev",
    penalties: Annotated[str, typer.Option(help="Comma-separated blank penalties.")] = (
        "0,0.5,1,1.5,2,2.5,3"
    ),
    beam: Annotated[int, typer.Option(help="Beam size.")] = 4,
    ctc_weights: Annotated[
        str,
        typer.Option(help="Comma-separated CTC weights for the second pass (empty: not tuned)."),
    ] = "",
    word_bonuses: Annotated[
        str, typer.Option(help="Comma-separated word bonuses for the second pass.")
    ] = "0",
    rescore_beam: Annotated[
        int, typer.Option(help="Beam of the first pass whose N-best the second pass reranks.")
    ] = 16,
) -> None:
    """Sweep the blank penalty on a dev split and store the best in the package manifest; with
    --ctc-weights, then sweep the second pass (CTC rescoring of the N-best) with that penalty."""
    _setup_logging(False)
    from edgeasr.decode import tune_blank_penalty, tune_rescoring
    from edgeasr.train.data import FeatureCache, cuts_path

    if split.startswith("test"):
        raise typer.BadParameter("tune on dev data, not on a test split", param_hint="--split")
    try:
        grid = [float(x) for x in penalties.split(",")]
        cw = [float(x) for x in ctc_weights.split(",")] if ctc_weights.strip() else []
        wb = [float(x) for x in word_bonuses.split(",")]
    except ValueError as e:
        raise typer.BadParameter(f"not a comma-separated list of numbers: {e}") from e
    cache = FeatureCache.build(cuts_path(corpus, split), Path(corpus) / "feats")
    best, sweep = tune_blank_penalty(model, cache, grid, beam, split=split)
    for p, wer in sweep.items():
        typer.echo(f"blank penalty {p:4.1f}: {split} WER {100 * wer:.2f}%")
    typer.echo(f"best blank penalty {best} written to {model}/manifest.json")
    if cw:
        r, rs = tune_rescoring(model, cache, cw, wb, rescore_beam, split=split)
        for (c, b), wer in rs.items():
            typer.echo(f"beam {rescore_beam}, CTC weight {c}, word bonus {b}: {100 * wer:.2f}%")
        typer.echo(
            f"best second pass (CTC weight {r.ctc_weight}, word bonus {r.word_bonus}) and "
            f"its beam {rescore_beam} written to {model}/manifest.json"
        )


def _read_refs(path: Path) -> dict[str, str]:
    with path.open() as fh:
        return {row["file"]: row["text"] for row in csv.DictReader(fh, delimiter="\t")}


@app.command()
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="16 kHz mono audio files.")],
    model: Annotated[
        Path | None, typer.Option(help="Model package dir (default: bundled).")
    ] = None,
    method: Annotated[str, typer.Option(help="greedy or beam.")] = "beam",
    refs: Annotated[Path | None, typer.Option(help="TSV (file, text) to score against.")] = None,
) -> None:
    """Print the transcript of each file; bad files get a one-line error, the rest still run."""
    _setup_logging(False)
    from edgeasr.audio import AudioError, load_audio
    from edgeasr.decode import DEFAULT_MODEL_DIR, Transcriber, word_error_rate
    from edgeasr.model.checkpoint import ModelPackageError

    try:
        tr = Transcriber.from_dir(model or DEFAULT_MODEL_DIR, method=method)
    except (ModelPackageError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    references = _read_refs(refs) if refs else {}
    failed = 0
    pairs: list[tuple[str, str]] = []
    for f in files:
        try:
            text = tr.transcribe(load_audio(f))
        except AudioError as exc:
            typer.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        typer.echo(f"{f}\t{text}")
        ref = references.get(f.name)
        if ref is not None:
            typer.echo(f"{'':>{len(str(f))}}\tref: {ref}")
            pairs.append((ref, text))
    if pairs:
        wer = word_error_rate([r for r, _ in pairs], [h for _, h in pairs])
        typer.echo(f"WER {100 * wer:.2f}% over {len(pairs)} files")
    if failed:
        raise typer.Exit(1)


@app.command("train-endpointer")
def train_endpointer_cmd(
    corpus: Annotated[Path, typer.Option(help="Corpus directory from `corpus synth`.")],
    model: Annotated[
        Path | None, typer.Option(help="Model package dir (default: bundled).")
    ] = None,
    train_utts: Annotated[int, typer.Option(help="Training utterances traced.")] = 3000,
    dev_utts: Annotated[int, typer.Option(help="Dev utterances for tuning (0: all).")] = 0,
) -> None:
    """Train the end-of-query classifier on the corpus' speech end times, tune both end-pointers
    on dev, and store classifier and settings in the model package (re-export afterwards)."""
    _setup_logging(True)
    from edgeasr.decode import DEFAULT_MODEL_DIR
    from edgeasr.train.endpoint import train_endpointer

    cfg, stats, rule = train_endpointer(model or DEFAULT_MODEL_DIR, corpus, train_utts, dev_utts)
    typer.echo(f"tuned: {cfg}")
    for name, st in (("rule only", rule), ("classifier", stats)):
        typer.echo(
            f"dev {name:<10}: final p50/p90 {st.final_p50:.2f}/{st.final_p90:.2f} s, "
            f"speculative lead p50 {st.lead_p50:.2f} s, early {100 * st.early_cutoff_rate:.1f}%, "
            f"reset {100 * st.reset_rate:.1f}%"
        )


@app.command("train-biaser")
def train_biaser_cmd(
    corpus: Annotated[Path, typer.Option(help="Corpus directory from `corpus synth`.")],
    model: Annotated[
        Path | None, typer.Option(help="Model package dir (default: bundled).")
    ] = None,
    names: Annotated[int, typer.Option(help="Made-up surnames to render.")] = 2000,
    synth_utts: Annotated[int, typer.Option(help="Utterances with a made-up name.")] = 6000,
    plain_utts: Annotated[int, typer.Option(help="Requests without a listed name.")] = 4000,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of names, texts, lists and batches.")] = 0,
    work_dir: Annotated[
        Path | None, typer.Option(help="Checkpoints for resuming (default MODEL/biaser-work).")
    ] = None,
) -> None:
    """Train the neural biasing module (a tree-constrained pointer generator) with the model
    frozen, on utterances with made-up names, and store it in the model package (re-export
    afterwards so the runtime uses it)."""
    _setup_logging(True)
    from edgeasr.decode import DEFAULT_MODEL_DIR
    from edgeasr.train.biaser import BiaserTrainConfig, train_biaser

    if min(names, synth_utts, epochs) < 1 or plain_utts < 0:
        _fail("--names, --synth-utts and --epochs must be at least 1, --plain-utts >= 0")
    cfg = BiaserTrainConfig(
        names=names, synth_utts=synth_utts, plain_utts=plain_utts, epochs=epochs, seed=seed
    )
    info = train_biaser(model or DEFAULT_MODEL_DIR, corpus, cfg, work_dir)
    typer.echo(
        f"held-back loss per token: {info['held_loss_per_token_unbiased']:.3f} unbiased, "
        f"{info['held_loss_per_token_biased']:.3f} biased ({info['total_s']:.0f} s)"
    )


DEFAULT_RUNTIME_DIR = Path(__file__).resolve().parents[2] / "models" / "edgeasr-small-en" / "onnx"


@app.command("export")
def export_cmd(
    model: Annotated[
        Path | None, typer.Option(help="Model package dir (default: bundled).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Runtime package dir (default: MODEL/onnx).")
    ] = None,
    int8: Annotated[bool, typer.Option(help="Also write the int8-quantised graphs.")] = True,
) -> None:
    """Export a model package to ONNX (encoder chunk + state, predictor, joiner) for the runtime."""
    _setup_logging(False)
    from edgeasr.decode import DEFAULT_MODEL_DIR
    from edgeasr.export import export_model_dir
    from edgeasr.model.checkpoint import ModelPackageError

    src = model or DEFAULT_MODEL_DIR
    try:
        path = export_model_dir(src, out or src / "onnx", int8=int8)
    except (ModelPackageError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path}")


def _block(spec: str) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"block must look like 1x8, got {spec!r}") from None
    return r, c


@app.command()
def compress(
    corpus: Annotated[Path, typer.Option(help="Corpus directory from `corpus synth`.")],
    out: Annotated[Path, typer.Option(help="Run directory (resumes if it has a checkpoint).")],
    model: Annotated[
        Path | None, typer.Option(help="Model package to fine-tune (default: bundled).")
    ] = None,
    config: Annotated[Path, typer.Option(help="Fine-tuning YAML.")] = Path("configs/compress.yaml"),
    bits: Annotated[int, typer.Option(help="QAT bit width (0: float).")] = 8,
    sparsity: Annotated[float, typer.Option(help="Final share of zero weights (0: none).")] = 0.0,
    block: Annotated[
        str,
        typer.Option(
            help="Pruning block, rows x cols: 1x1 is the most accurate; 4x1 to 16x1 (rows of one "
            "input) are what the zero-skipping kernel runs at vector width."
        ),
    ] = "1x1",
    reg_weight: Annotated[float, typer.Option(help="Grid regulariser weight (0: STE only).")] = 0.0,
    rate_weight: Annotated[
        float,
        typer.Option(
            help="Rate regulariser weight: pull per code unit towards zero, for a smaller packed "
            "file at some cost in accuracy (0: off)."
        ),
    ] = 0.0,
    rate_target_bits: Annotated[
        float,
        typer.Option(
            help="Hold the packed size to this many bits per compressed weight: the rate weight "
            "(--rate-weight, default 1e-6 here) then moves to meet it (0: a fixed weight)."
        ),
    ] = 0.0,
    scope: Annotated[
        str,
        typer.Option(
            help="Pruning threshold: 'layer' (each matrix to the target) or 'global' (one over "
            "all matrices). Default: the config's."
        ),
    ] = "",
    saliency: Annotated[
        str,
        typer.Option(
            help="Pruning score: 'magnitude' (|w|) or 'activation' (|w| times its input's RMS "
            "on training utterances). Default: the config's."
        ),
    ] = "",
    one_shot: Annotated[
        bool,
        typer.Option(help="Prune to the target at the first step, not on the config's schedule."),
    ] = False,
    reconstruct: Annotated[
        bool,
        typer.Option(
            help="With --one-shot: re-fit the kept weights to the dense outputs by least squares "
            "on the calibration inputs before fine-tuning."
        ),
    ] = False,
    epochs: Annotated[int, typer.Option(help="Override the config's epochs.")] = 0,
    max_steps: Annotated[int, typer.Option(help="Stop after N steps (smoke tests).")] = 0,
) -> None:
    """Quantisation-aware training and/or gradual pruning of a trained model; writes the best
    compressed package to OUT/best and its packed file to OUT/model.pack."""
    _setup_logging(True)
    from edgeasr.compress.convert import pack_model
    from edgeasr.compress.sparsity import check_prune_choices
    from edgeasr.compress.training import DEFAULT_RATE_WEIGHT, compression_experiment
    from edgeasr.decode import DEFAULT_MODEL_DIR
    from edgeasr.train.trainer import Trainer

    src = model or DEFAULT_MODEL_DIR
    cfg = compression_experiment(config, src, bits, sparsity, _block(block), reg_weight)
    comp = cfg.train.compression
    if rate_weight:
        comp.rate_weight = rate_weight
    if rate_target_bits:
        comp.rate_target_bits = rate_target_bits
        comp.rate_weight = comp.rate_weight or DEFAULT_RATE_WEIGHT
    try:
        comp.validate()  # the options' values pass the checks a YAML file's would
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if comp.rate_weight and not comp.bits:
        raise typer.BadParameter("the rate regulariser pulls on integer codes: it needs --bits")
    prune = cfg.train.compression.prune
    prune.scope = scope or prune.scope
    prune.saliency = saliency or prune.saliency
    if one_shot:
        prune.start_frac = prune.end_frac = 0.0
    prune.reconstruct = reconstruct or prune.reconstruct
    try:
        check_prune_choices(prune)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if epochs:
        cfg.train.epochs = epochs
    if max_steps:
        cfg.train.max_steps = max_steps
    best = Trainer(cfg, corpus, out).fit()
    summary = pack_model(best, out / "model.pack")
    typer.echo(f"best package: {best}; packed: {out / 'model.pack'} {summary}")


@app.command()
def pack(
    model: Annotated[Path, typer.Argument(help="Model package dir.")],
    out: Annotated[Path, typer.Argument(help="Packed file to write.")],
    bits: Annotated[
        int, typer.Option(help="Bit width (default: the package's QAT width, else 8).")
    ] = 0,
    block: Annotated[str, typer.Option(help="Zero-map block (default: the package's).")] = "",
) -> None:
    """Pack a model package into one low-bit, sparse, zstd-compressed, checksummed file."""
    _setup_logging(False)
    from edgeasr.compress.convert import pack_model
    from edgeasr.model.checkpoint import ModelPackageError

    try:
        summary = pack_model(model, out, bits or None, _block(block) if block else None)
    except ModelPackageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    fp32 = (model / "model.safetensors").stat().st_size
    typer.echo(
        f"wrote {out}: {summary['bytes']:,} bytes ({fp32 / summary['bytes']:.1f}x smaller than "
        f"the fp32 safetensors), {summary['bits']} bits, {100 * summary['sparsity']:.1f}% zeros"
    )


@app.command()
def unpack(
    packed: Annotated[Path, typer.Argument(help="Packed model file.")],
    out: Annotated[Path, typer.Option(help="Model package dir to write.")],
) -> None:
    """Verify and decode a packed file into a model package (dense float weights)."""
    _setup_logging(False)
    from edgeasr.compress.convert import unpack_model
    from edgeasr.compress.packed import PackedModelError

    try:
        path = unpack_model(packed, out)
    except PackedModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path}")


def _read_phrases(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


@app.command()
def stream(
    files: Annotated[list[Path], typer.Argument(help="16 kHz mono audio files.")],
    context: Annotated[
        Path | None, typer.Option(help="Phrases to bias towards, one per line.")
    ] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Run the int8 graphs.")] = False,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Runtime package dir (default: bundled, exported) or a packed model file."
        ),
    ] = None,
    chunk_ms: Annotated[int, typer.Option(help="Audio piece size fed to the stream.")] = 160,
    json_lines: Annotated[
        bool, typer.Option("--json", help="One JSON object per event (with lattices).")
    ] = False,
    neural: Annotated[
        bool,
        typer.Option(help="Use the package's neural biasing module with --context, if it has one."),
    ] = True,
    gate_offset: Annotated[
        float | None,
        typer.Option(help="Neural biasing: offset of the pointer gate's logit (default: -2)."),
    ] = None,
) -> None:
    """Stream files through the on-device runtime (onnxruntime, no torch), printing partial
    results and end-pointer events with the audio time at which each fired."""
    _setup_logging(False)
    import json

    from edgeasr.audio import AudioError, load_audio
    from edgeasr.compress.packed import PackedModelError
    from edgeasr.runtime import Recognizer, RuntimePackageError

    try:
        rec = Recognizer(
            model or DEFAULT_RUNTIME_DIR,
            variant="int8" if int8 else "fp32",
            neural_biasing=neural,
            gate_offset=gate_offset,
        )
    except (RuntimePackageError, PackedModelError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    phrases = _read_phrases(context) if context else []
    step = max(1, 16 * chunk_ms)
    failed = 0
    for f in files:
        try:
            samples = load_audio(f)
        except AudioError as exc:
            typer.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        st = rec.create_stream(context=phrases)
        events = []
        for start in range(0, len(samples), step):
            events += st.accept_waveform(samples[start : start + step])
        events += st.input_finished()
        if not json_lines:
            typer.echo(str(f))
        for ev in events:
            if json_lines:
                obj = {"file": str(f), "kind": ev.kind, "time_s": ev.time_s, "text": ev.text}
                if ev.lattice is not None:
                    obj["lattice"] = json.loads(ev.lattice.to_json())
                typer.echo(json.dumps(obj))
                continue
            extra = ""
            if ev.lattice is not None and ev.lattice.words:
                conf = " ".join(f"{w.word}:{w.confidence:.2f}" for w in ev.lattice.words)
                extra = f"  [{conf}]"
            typer.echo(f"  {ev.time_s:6.2f}s {ev.kind:<16} {ev.text}{extra}")
    if failed:
        raise typer.Exit(1)


def _weights_file(path: Path) -> Path:
    return path / "model.safetensors" if path.is_dir() else path


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _public_key(path: Path):
    """The update key a device trusts, or a one-line error."""
    from edgeasr.update.diff import DiffError, load_public_key

    try:
        return load_public_key(path.read_bytes())
    except (OSError, DiffError) as exc:
        _fail(f"{path}: {exc}")


@diff_app.command("keygen")
def diff_keygen(
    out: Annotated[Path, typer.Option(help="Key path stem: writes STEM.key and STEM.pub.")],
) -> None:
    """A new Ed25519 update-signing key (private key readable by the owner only)."""
    from edgeasr.update.diff import new_signing_key, private_key_bytes, public_key_bytes

    key = new_signing_key()
    out.parent.mkdir(parents=True, exist_ok=True)
    priv = out.with_suffix(".key")
    priv.touch(mode=0o600, exist_ok=False)
    priv.write_bytes(private_key_bytes(key))
    out.with_suffix(".pub").write_bytes(public_key_bytes(key))
    typer.echo(f"{priv} (keep secret), {out.with_suffix('.pub')} (ship to devices)")


@diff_app.command("make")
def diff_make(
    base: Annotated[Path, typer.Option(help="Base model package (or its model.safetensors).")],
    new: Annotated[Path, typer.Option(help="Updated model package (or model.safetensors).")],
    key: Annotated[Path, typer.Option(help="Private signing key (from `diff keygen`).")],
    out: Annotated[Path, typer.Option(help="Diff file to write.")],
    method: Annotated[
        str, typer.Option(help="sparse, hash, lowrank, dense or binary (zstd delta).")
    ] = "sparse",
    density: Annotated[
        float,
        typer.Option(
            help="sparse: share of each tensor kept (0: every change); hash, lowrank: share "
            "of weights in buckets or factors (0: 2%)."
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="hash: the seed the diff was trained with.")] = 0,
) -> None:
    """A signed diff from one model to another (sparse: changed weights, int8)."""
    from edgeasr.update.diff import DiffError, load_private_key, make_diff

    try:
        data, _ = make_diff(
            _weights_file(base), _weights_file(new), load_private_key(key.read_bytes()),
            method, density or None, seed=seed,
        )  # fmt: skip
    except (OSError, ValueError, DiffError) as exc:
        _fail(str(exc))
    out.write_bytes(data)
    full = _weights_file(new).stat().st_size
    typer.echo(f"{out}: {len(data):,} bytes ({100 * len(data) / full:.2f}% of the model file)")


@diff_app.command("train")
def diff_train(
    corpus: Annotated[Path, typer.Option(help="Corpus with the update's new material.")],
    out: Annotated[Path, typer.Option(help="Run directory (resumes if it has a checkpoint).")],
    base: Annotated[Path | None, typer.Option(help="Base package (default: bundled).")] = None,
    config: Annotated[Path, typer.Option(help="Fine-tuning YAML.")] = Path("configs/update.yaml"),
    density: Annotated[
        float,
        typer.Option(
            help="Share of each matrix's weights the diff holds (changes, buckets, factors)."
        ),
    ] = 0.1,
    method: Annotated[
        str, typer.Option(help="sparse, hash, lowrank, or full (no diff).")
    ] = "sparse",
    seed: Annotated[int, typer.Option(help="hash: seed of the position hash.")] = 0,
    epochs: Annotated[int, typer.Option(help="Override the config's epochs.")] = 0,
    max_steps: Annotated[int, typer.Option(help="Stop after N steps (smoke tests).")] = 0,
    replay_corpus: Annotated[
        Path | None,
        typer.Option(
            help="Base corpus to rehearse afresh each epoch (config: replay_utts) and to weigh "
            "the weights by (ewc_weight)."
        ),
    ] = None,
) -> None:
    """Fine-tune W = W_base + d with only d trained: pruned on a cubic schedule to ``density``
    of the weights (sparse), tied into hashed buckets (hash) or factorised (lowrank); the new
    model goes to OUT/best, ready for `diff make` with the same method, density and seed."""
    _setup_logging(True)
    from edgeasr.compress.training import diff_experiment
    from edgeasr.decode import DEFAULT_MODEL_DIR
    from edgeasr.train.trainer import Trainer

    try:
        cfg = diff_experiment(config, base or DEFAULT_MODEL_DIR, method, density, seed)
    except ValueError as exc:
        _fail(str(exc))
    if epochs:
        cfg.train.epochs = epochs
    if max_steps:
        cfg.train.max_steps = max_steps
    if replay_corpus is not None:
        cfg.train.replay_corpus = str(replay_corpus)
    try:
        best = Trainer(cfg, corpus, out).fit()
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"new model package: {best}")


@diff_app.command("verify")
def diff_verify(
    diff: Annotated[Path, typer.Argument(help="Diff file.")],
    pubkey: Annotated[Path, typer.Option(help="Public update key.")],
) -> None:
    """Check a diff's structure and signature; print what it changes."""
    from edgeasr.update.diff import DiffError, read_diff

    try:
        d = read_diff(diff.read_bytes(), _public_key(pubkey))
    except (OSError, DiffError) as exc:
        _fail(f"{diff}: {exc}")
    h = d.header
    typer.echo(
        f"{diff}: OK, {h['method']}, {len(h['tensors'])} tensors, {d.size:,} bytes, "
        f"base {d.base_sha256[:16]} -> {d.result_sha256[:16]}"
    )


@diff_app.command("apply")
def diff_apply(
    diff: Annotated[Path, typer.Argument(help="Diff file.")],
    store: Annotated[Path, typer.Option(help="Device model store directory.")],
    pubkey: Annotated[Path, typer.Option(help="Public update key.")],
) -> None:
    """Verify and apply a diff to the store's current model (atomic; rejected diffs change
    nothing)."""
    from edgeasr.update import DiffError, ModelStore

    try:
        dest = ModelStore(store).apply(diff.read_bytes(), _public_key(pubkey))
    except (OSError, DiffError) as exc:
        _fail(f"{diff}: {exc}")
    typer.echo(f"now on {dest.name}")


@diff_app.command("publish")
def diff_publish(
    diff: Annotated[Path, typer.Argument(help="Diff file.")],
    repo: Annotated[Path, typer.Option(help="Update repository directory (served by `serve`).")],
    pubkey: Annotated[Path, typer.Option(help="Public update key: unsigned diffs are refused.")],
) -> None:
    """Add a verified diff to an update repository; its result becomes the latest model."""
    from edgeasr.update.diff import DiffError
    from edgeasr.update.server import publish

    try:
        entry = publish(repo, diff, _public_key(pubkey))
    except (OSError, ValueError, DiffError) as exc:
        _fail(f"{diff}: {exc}")
    typer.echo(f"published {entry['file']} ({entry['bytes']:,} bytes)")


@update_app.command("serve")
def update_serve(
    repo: Annotated[Path, typer.Option(help="Update repository directory.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8470,
) -> None:
    """Serve an update repository (manifest and diffs, with resumable downloads)."""
    import uvicorn

    from edgeasr.update.server import create_app

    uvicorn.run(create_app(repo), host=host, port=port, log_level="info")


@update_app.command("pull")
def update_pull(
    server: Annotated[str, typer.Option(help="Update server URL.")],
    store: Annotated[Path, typer.Option(help="Device model store directory.")],
    pubkey: Annotated[Path, typer.Option(help="Public update key.")],
) -> None:
    """Fetch and apply the server's diffs until the device runs the latest model."""
    from edgeasr.update import DiffError, ModelStore
    from edgeasr.update.client import UpdateError, pull

    try:
        res = pull(server, ModelStore(store), _public_key(pubkey))
    except (OSError, DiffError, UpdateError) as exc:
        _fail(str(exc))
    typer.echo(
        f"applied {len(res.applied)} update(s), {res.bytes_downloaded:,} bytes downloaded; "
        f"now on {res.current[:16]}"
    )


@update_app.command("install")
def update_install(
    model: Annotated[Path, typer.Argument(help="Model package to install as current.")],
    store: Annotated[Path, typer.Option(help="Device model store directory.")],
) -> None:
    """Install a whole model package into the store and switch to it."""
    from edgeasr.update import ModelStore

    try:
        dest = ModelStore(store).install(model)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"now on {dest.name}")


@update_app.command("rollback")
def update_rollback(
    store: Annotated[Path, typer.Option(help="Device model store directory.")],
) -> None:
    """Switch back to the previous model version."""
    from edgeasr.update import ModelStore

    try:
        dest = ModelStore(store).rollback()
    except FileNotFoundError as exc:
        _fail(str(exc))
    typer.echo(f"now on {dest.name}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
