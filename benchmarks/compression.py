"""Compression benchmark: bytes on disk, WER, speed and multiply-adds of the bundled model after
post-training quantisation, quantisation-aware training, gradual pruning and their combinations.

Every compressed row is a fine-tune of the same fp32 model (``--model``) with `edgeasr compress`
(``--config``, by default ``configs/compress.yaml``: two epochs over a fixed subset of the
training set), then packed (`edgeasr pack`). WER is measured on the packed file's weights
(unpacked), with the model card's decoding (modified beam search, beam 4, the tuned blank
penalty); speed on the device path that reads the packed file (``Recognizer(file,
variant=dense|sparse)``: numpy/BLAS vs the numba zero-skipping kernel, one thread, the same
weights, alternating per utterance). Runs already in ``--runs`` are reused, and so are a row's
measurements while its weights and the measuring options stay the same
(``<row>.results.json``), so an interrupted or extended benchmark resumes. Writes
docs/results/compression.{md,json,png}.

    .venv/bin/python benchmarks/compression.py --corpus data/corpus \
        --config configs/compress-distill.yaml --runs runs/compress-distill

is the published page: every row also distils from the fp32 model (without ``--config``, the
plain recipe of ``configs/compress.yaml``; give it its own ``--runs`` and ``--name``). The page
adds ``--large-corpus data/corpus30``: rows marked *30 h corpus* fine-tune on every training
utterance of that corpus (``edgeasr corpus synth --out data/corpus30 --hours 30 --seed 1
--no-test-audio``, whose first 10 h are the default corpus' training set); without it they are
left out.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    pct,
    set_torch_threads,
    slug,
    wer_of,
)

log = logging.getLogger("compression")

SPLITS = ("test", "test_xengine")
TUNED = "fp32, fine-tuned"
TUNED_LARGE = "fp32, fine-tuned, 30 h corpus, 1 epoch"
# Pruning block (rows x inputs) of the rows that name none: unstructured, the most accurate. The
# rows marked "8x1 blocks" prune eight output rows of one input together, which the zero-skipping
# kernel runs at vector width (see its table), at a cost in accuracy.
DEFAULT_BLOCK = "1x1"
ROW_BLOCK = (8, 1)
# 4x1 blocks: the zero map costs a quarter bit per weight (1x1: one bit), but a kept block stores
# its small codes too, so int8 at 50% still takes 1/7.7 of the fp32 bytes, not 1/8
# (scripts/probe_code_entropy.py); 8x1 fits, at far more accuracy cost
# (docs/results/device-runs-stage3.md: +32% on a GPU).
QUARTER_BLOCK = (4, 1)
# Block pruning removes whole groups of weights at each step, which a two-epoch fine-tune does not
# recover from (stop 16: 8x1 at 50% ended at +57% WER); these rows train longer.
BLOCK_EPOCHS = 6
REG_WEIGHT = 1e-4  # grid regulariser pull per weight (see edgeasr.compress.quant.grid_penalty)
LIGHT_REG = 1e-5  # a tenth of it: on today's base the full pull costs accuracy at 8 and 4 bits
# bits per compressed weight that pack the small model into 1/8 of its fp32 bytes with room to
# spare: 3.86 M compressed weights at 3.85 bits are 1.86 MB, and the packed file (scales, floats,
# tokenizer, zstd) runs 4-5% above that estimate, against 1.98 MB allowed
RATE_BUDGET_BITS = 3.85


@dataclass
class Row:
    name: str
    bits: int  # packed bit width (16 = float-equivalent for the pruning-only rows)
    qat: bool = False  # fine-tuned with fake quantisation at ``bits``
    sparsity: float = 0.0
    reg_weight: float = 0.0
    block: tuple[int, int] | None = None  # pruning block; None: the --block default
    epochs: int = 0  # fine-tuning epochs; 0: the config's
    scope: str | None = None  # pruning scope, "layer" or "global"; None: the config's
    saliency: str | None = None  # "magnitude" or "activation" (compress.saliency); None: config's
    # prune the whole target at the first step (schedule end at 0) instead of the cubic schedule:
    # with a good score to start from, every step is left to recover
    one_shot: bool = False
    # one-shot only: re-fit the kept weights to the dense outputs by least squares on the
    # calibration inputs (prune.reconstruct, compress.sparsity.reconstruct_kept)
    reconstruct: bool = False
    # the rate regulariser (compress.quant.rate_penalty) held to a packed-size budget in bits
    # per compressed weight (CompressionConfig.rate_target_bits), starting at its default weight
    rate_target_bits: float = 0.0
    # fine-tuned without compression: what the recipe alone does to the fp32 model, the fair
    # reference for rows whose gain over the base is partly extra training
    plain_fine_tune: bool = False
    # fine-tuned on every training utterance of --large-corpus instead of the recipe's subset of
    # --corpus: fresh audio each step for the same number of steps (the bundled model's last
    # training stage saw 30 h; a 10 h subset seen six times over is what these rows recover on)
    large_corpus: bool = False
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return self.qat or self.sparsity > 0 or self.plain_fine_tune

    @property
    def slug(self) -> str:
        return slug(self.name)


# the best int8 + 50% recipe (stop 27): QAT int8, one global threshold over activation-aware
# scores, all of the pruning at the first step so every step is left to recover; no regulariser
ONE_SHOT_AWARE: dict[str, Any] = {
    "qat": True,
    "sparsity": 0.5,
    "scope": "global",
    "saliency": "activation",
    "one_shot": True,
}


def rows() -> list[Row]:
    return [
        Row("fp32", 32),
        Row(TUNED, 32, plain_fine_tune=True),
        # the reference for the 30 h corpus rows: what that data alone does to the fp32 model
        Row(TUNED_LARGE, 32, plain_fine_tune=True, epochs=1, large_corpus=True),
        Row("PTQ int8", 8),
        Row("PTQ 4-bit", 4),
        Row("QAT int8", 8, qat=True, reg_weight=REG_WEIGHT),
        Row("QAT int8, no regulariser", 8, qat=True),
        Row("QAT 4-bit", 4, qat=True, reg_weight=REG_WEIGHT),
        Row("QAT 4-bit, regulariser 1e-5", 4, qat=True, reg_weight=LIGHT_REG),
        Row("QAT 4-bit, no regulariser", 4, qat=True),
        Row("sparse 50%", 16, sparsity=0.5),
        Row("sparse 70%", 16, sparsity=0.7),
        Row("sparse 90%", 16, sparsity=0.9),
        # one threshold over all matrices: the ones whose weights matter more keep more of them
        Row("sparse 50%, global", 16, sparsity=0.5, scope="global"),
        Row("QAT int8 + 50% sparse", 8, qat=True, sparsity=0.5, reg_weight=REG_WEIGHT),
        Row("QAT int8 + 50% sparse, no regulariser", 8, qat=True, sparsity=0.5),
        Row(
            "QAT int8 + 50% sparse, global",
            8,
            qat=True,
            sparsity=0.5,
            reg_weight=REG_WEIGHT,
            scope="global",
        ),
        Row(
            "QAT int8 + 50% sparse, global, no regulariser",
            8,
            qat=True,
            sparsity=0.5,
            scope="global",
        ),
        # weights scored by |w| times their input's RMS: one threshold then compares layers by
        # what each weight adds to its output (compress.saliency)
        Row(
            "sparse 50%, global, activation-aware",
            16,
            sparsity=0.5,
            scope="global",
            saliency="activation",
        ),
        Row(
            "QAT int8 + 50% sparse, global, activation-aware, no regulariser",
            8,
            qat=True,
            sparsity=0.5,
            scope="global",
            saliency="activation",
        ),
        Row(
            "QAT int8 + 50% sparse, 6 epochs",
            8,
            qat=True,
            sparsity=0.5,
            reg_weight=REG_WEIGHT,
            epochs=BLOCK_EPOCHS,
        ),
        Row("QAT 4-bit + 70% sparse", 4, qat=True, sparsity=0.7, reg_weight=REG_WEIGHT),
        Row(
            "QAT int8 + 50% sparse, global, activation-aware, one-shot, 6 epochs, no regulariser",
            8,
            epochs=BLOCK_EPOCHS,
            **ONE_SHOT_AWARE,
        ),
        # int8 codes of the kept weights carry ~7.3 bits (scripts/probe_code_entropy.py), so
        # 50% unstructured sparsity packs to 1/6.9; 6-bit codes (~5.4 bits) fit 1/8
        Row(
            "QAT 6-bit + 50% sparse, global",
            6,
            qat=True,
            sparsity=0.5,
            reg_weight=REG_WEIGHT,
            scope="global",
        ),
        Row("sparse 70%, 8x1 blocks", 16, sparsity=0.7, block=ROW_BLOCK, epochs=BLOCK_EPOCHS),
        Row(
            "QAT int8 + 50% sparse, 4x1 blocks, no regulariser",
            8,
            qat=True,
            sparsity=0.5,
            block=QUARTER_BLOCK,
            epochs=BLOCK_EPOCHS,
        ),
        # the same one-shot recipe on fresh audio: every utterance of a 30 h corpus once (about
        # the steps of 6 epochs of the 8,000-utterance subset), or twice
        *[
            Row(
                f"QAT int8 + 50% sparse, global, activation-aware, one-shot, 30 h corpus, "
                f"{n} epoch{'s' if n > 1 else ''}, no regulariser",
                8,
                epochs=n,
                large_corpus=True,
                **ONE_SHOT_AWARE,
            )
            for n in (1, 2)
        ],
        # more zeros instead of blocks: unstructured int8 at 50% packs to 1/7.0 because each
        # kept code carries ~7.25 bits and the zero map up to a bit per weight
        # (scripts/probe_code_entropy.py); at 60% the codes of the 10% more zeros pay for the
        # map, and 1x1 pruning keeps its accuracy edge
        Row(
            "QAT int8 + 60% sparse, global, activation-aware, one-shot, 30 h corpus, 2 epochs, "
            "no regulariser",
            8,
            epochs=2,
            large_corpus=True,
            **{**ONE_SHOT_AWARE, "sparsity": 0.6},
        ),
        # the kept weights re-fitted by least squares after the one-shot prune: before any
        # fine-tuning, 60% 1x1 is then at 17.6% WER instead of 34.7%, and 50% 8x1 at 41.1%
        # instead of 79.0% (scripts/probe_saliency.py --refit)
        Row(
            "QAT int8 + 60% sparse, global, activation-aware, one-shot, reconstructed, 30 h "
            "corpus, 2 epochs, no regulariser",
            8,
            epochs=2,
            large_corpus=True,
            reconstruct=True,
            **{**ONE_SHOT_AWARE, "sparsity": 0.6},
        ),
        Row(
            "QAT int8 + 50% sparse, 8x1 blocks, global, activation-aware, one-shot, "
            "reconstructed, 30 h corpus, 2 epochs, no regulariser",
            8,
            block=ROW_BLOCK,
            epochs=2,
            large_corpus=True,
            reconstruct=True,
            **ONE_SHOT_AWARE,
        ),
        # the best 50% recipes (10 h subset, 30 h corpus) held to a size budget by the rate
        # regulariser: the pull on the codes lets training choose between more zeros and cheaper
        # codes to fit 1/8
        Row(
            f"QAT int8 + 50% sparse, global, activation-aware, one-shot, 6 epochs, "
            f"rate budget {RATE_BUDGET_BITS:g} bits, no regulariser",
            8,
            epochs=BLOCK_EPOCHS,
            rate_target_bits=RATE_BUDGET_BITS,
            **ONE_SHOT_AWARE,
        ),
        Row(
            f"QAT int8 + 50% sparse, global, activation-aware, one-shot, 30 h corpus, 2 epochs, "
            f"rate budget {RATE_BUDGET_BITS:g} bits, no regulariser",
            8,
            epochs=2,
            large_corpus=True,
            rate_target_bits=RATE_BUDGET_BITS,
            **ONE_SHOT_AWARE,
        ),
        # 8x1 blocks: one zero-map bit per 8 weights, the only int8 + 50% layout that packs
        # to 1/8; with the best 1x1 recipe's scores and one-shot schedule
        Row(
            "QAT int8 + 50% sparse, 8x1 blocks, global, activation-aware, one-shot, 6 epochs, "
            "no regulariser",
            8,
            block=ROW_BLOCK,
            epochs=BLOCK_EPOCHS,
            **ONE_SHOT_AWARE,
        ),
        Row(
            "QAT int8 + 50% sparse, 8x1 blocks, global, activation-aware, one-shot, 30 h corpus, "
            "2 epochs, no regulariser",
            8,
            block=ROW_BLOCK,
            epochs=2,
            large_corpus=True,
            **ONE_SHOT_AWARE,
        ),
    ]


def fine_tune(
    row: Row,
    base: Path,
    corpus: Path,
    runs: Path,
    max_steps: int,
    block: tuple[int, int],
    config: Path,
    large_corpus: Path | None = None,
) -> Path:
    """The row's compressed package (trained unless ``runs`` already holds it)."""
    from edgeasr.compress.training import DEFAULT_RATE_WEIGHT, compression_experiment
    from edgeasr.train.trainer import Trainer

    run = runs / row.slug
    best = run / "best"
    if (best / "manifest.json").exists() and (run / "done").exists():
        return best
    cfg = compression_experiment(
        config,
        base,
        row.bits if row.qat else 0,
        row.sparsity,
        block,
        row.reg_weight,
    )
    if row.epochs:
        cfg.train.epochs = row.epochs
    if row.scope:
        cfg.train.compression.prune.scope = row.scope
    if row.saliency:
        cfg.train.compression.prune.saliency = row.saliency
    if row.one_shot:
        cfg.train.compression.prune.start_frac = cfg.train.compression.prune.end_frac = 0.0
    cfg.train.compression.prune.reconstruct = row.reconstruct
    if row.rate_target_bits:
        cfg.train.compression.rate_weight = DEFAULT_RATE_WEIGHT
        cfg.train.compression.rate_target_bits = row.rate_target_bits
    if row.large_corpus:
        if large_corpus is None:
            raise ValueError(f"row {row.name!r} needs --large-corpus")
        corpus = large_corpus
        cfg.train.max_train_utts = 0
    if max_steps:
        cfg.train.max_steps = max_steps
    t0 = time.time()
    Trainer(cfg, corpus, run).fit()
    (run / "done").write_text(
        json.dumps({"train_s": round(time.time() - t0, 1), "epochs": cfg.train.epochs})
    )
    return best


def speed_of(packed: Path, audio: list, beam: int) -> dict[str, Any]:
    """RTF of the dense and the zero-skipping kernel on the same weights, alternating: the whole
    recogniser (features, encoder, search) and, within it, the encoder's share; and of ``auto``,
    the runtime's default, which skips zeros only in the matrices where that pays."""
    from edgeasr.runtime import EndpointConfig, Recognizer

    never = EndpointConfig(speculative_s=600, final_s=600, use_classifier=False)
    recs = {
        k: Recognizer(packed, variant=k, beam=beam, endpoint=never)
        for k in ("dense", "sparse", "auto")
    }
    enc_spent = dict.fromkeys(recs, 0.0)

    def timed(encode, k: str):
        def encode_chunk(*args):
            t0 = time.perf_counter()
            out = encode(*args)
            enc_spent[k] += time.perf_counter() - t0
            return out

        return encode_chunk

    for k, rec in recs.items():
        rec.model.encode_chunk = timed(rec.model.encode_chunk, k)
    for rec in recs.values():  # warm-up (numba compiles once, then loads from its cache)
        st = rec.create_stream()
        st.accept_waveform(audio[0][:16000])
        st.input_finished()
    spent = dict.fromkeys(recs, 0.0)
    enc_spent.update(dict.fromkeys(recs, 0.0))
    texts: dict[str, list[str]] = {k: [] for k in recs}
    total_s = 0.0
    for i, samples in enumerate(audio):
        order = list(recs)[i % 3 :] + list(recs)[: i % 3]
        for k in order:
            t0 = time.perf_counter()
            st = recs[k].create_stream()
            ev = st.accept_waveform(samples) + st.input_finished()
            spent[k] += time.perf_counter() - t0
            texts[k].append(ev[-1].text)
        total_s += len(samples) / 16000
    macs = {k: rec.model.macs_per_frame()["encoder"] for k, rec in recs.items()}
    return {
        "rtf_dense": spent["dense"] / total_s,
        "rtf_sparse": spent["sparse"] / total_s,
        "rtf_auto": spent["auto"] / total_s,
        "speedup": spent["dense"] / spent["sparse"],
        "speedup_auto": spent["dense"] / spent["auto"],
        "enc_rtf_dense": enc_spent["dense"] / total_s,
        "enc_rtf_sparse": enc_spent["sparse"] / total_s,
        "kernels_agree": texts["dense"] == texts["sparse"] == texts["auto"],
        "macs_dense": macs["dense"],
        "macs_sparse": macs["sparse"],
    }


def kernel_sweep(repeats: int = 2000) -> list[dict[str, Any]]:
    """Dense BLAS vs the zero-skipping kernel on a 1280×320 matrix (one LSTM's gate weights):
    one frame (the recurrent product) and a chunk of 8 frames (the input product)."""
    import numpy as np

    from edgeasr.runtime.kernels import BlockSparseMatrix

    rng = np.random.default_rng(0)
    R, C = 1280, 320
    out = []

    def clock(f) -> float:
        f()
        t0 = time.perf_counter()
        for _ in range(repeats):
            f()
        return (time.perf_counter() - t0) / repeats * 1e6

    for br in (1, 4, 8, 16):
        for sp in (0.0, 0.5, 0.7, 0.8, 0.9, 0.95):
            keep = np.repeat(rng.random((R // br, C)) >= sp, br, axis=0)
            w = (rng.standard_normal((R, C)) * keep).astype(np.float32)
            wt = np.ascontiguousarray(w.T)
            m = BlockSparseMatrix(w, br)
            row: dict[str, Any] = {"block": f"{br}x1", "sparsity": sp}
            for frames in (1, 8):
                x = rng.standard_normal((frames, C)).astype(np.float32)
                assert np.allclose(m.matmul(x), x @ wt, atol=1e-3)
                row[f"dense_us_{frames}"] = clock(lambda: x @ wt)  # noqa: B023
                row[f"sparse_us_{frames}"] = clock(lambda: m.matmul(x))  # noqa: B023
            out.append(row)
    return out


def plot(rs: list[Row], fp32_bytes: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in rs:
        b = r.results["bytes"] / 1e6
        w = 100 * r.results["wer_all"]
        ax.scatter(b, w, s=40, marker="s" if r.qat else ("^" if r.sparsity else "o"))
        ax.annotate(r.name, (b, w), textcoords="offset points", xytext=(5, 3), fontsize=8)
    ax.axvline(fp32_bytes / 8 / 1e6, ls="--", c="gray", lw=0.8)
    ax.text(fp32_bytes / 8 / 1e6, ax.get_ylim()[1], " 1/8 of fp32", va="top", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("bytes on disk (MB, log scale)")
    ax.set_ylabel("WER, test + test_xengine (%)")
    ax.set_title("WER vs model size")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def dev_wer(run: Path) -> float | None:
    """The best dev WER the fine-tune recorded (the trainer keeps that epoch as ``best``)."""
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        return None
    devs = [
        rec["dev_wer"]
        for line in metrics.read_text().splitlines()
        if line.strip() and "dev_wer" in (rec := json.loads(line))
    ]
    return min(devs) if devs else None


def chosen_on_dev(rs: dict[str, Row], prefix: str) -> Row:
    """Among the rows named ``prefix`` or ``prefix, <variant>`` (regulariser weights), the one
    with the lowest dev WER: the regulariser weight is a setting to tune, and tuning it on the
    test sets that the bar reads would flatter it."""
    cands = [r for n, r in rs.items() if n == prefix or n.startswith(prefix + ", ")]
    known = [r for r in cands if r.results.get("dev_wer") is not None]
    return min(known, key=lambda r: r.results["dev_wer"]) if known else rs[prefix]


def versus(row: Row, ref: Row) -> str:
    """``row``'s WER against ``ref``'s: "x% vs y% (+z%; 95% interval a .. b)", the interval from
    a paired bootstrap over the test utterances both decoded (both splits pooled), so a
    difference can be told from the luck of one test set."""
    from edgeasr.decode import relative_change_ci

    a, b = ref.results, row.results
    text = (
        f"{pct(b['wer_all'], 2)} vs {pct(a['wer_all'], 2)} ({b['wer_all'] / a['wer_all'] - 1:+.1%}"
    )
    if all(f"errors_{s}" in x for s in SPLITS for x in (a, b)):
        pooled = [sum((x[f"errors_{s}"] for s in SPLITS), []) for x in (a, b)]
        _, lo, hi = relative_change_ci(*pooled)
        text += f"; 95% interval {lo:+.1%} .. {hi:+.1%}"
    return text + ")"


def bars(rs: dict[str, Row], fp32_bytes: int) -> list[tuple[str, bool, str]]:
    base = rs["fp32"].results["wer_all"]
    q4_row = chosen_on_dev(rs, "QAT 4-bit")
    q4 = q4_row.results
    p4 = rs["PTQ 4-bit"].results
    out = []
    # every QAT int8 row with at least 50% zeros carries the bar, in the page's row order (more
    # zeros than the bar's 50% leave fewer weights to do the work, never more)
    for row in [r for r in rs.values() if r.qat and r.bits == 8 and r.sparsity >= 0.5]:
        combo = row.results
        out += [
            (
                f"{row.name} packed to at most 1/8 of the fp32 file's bytes",
                combo["bytes"] <= fp32_bytes / 8,
                f"{combo['bytes']:,} bytes = 1/{fp32_bytes / combo['bytes']:.1f} of {fp32_bytes:,}",
            ),
            (
                "... with WER within 5% relative of fp32",
                combo["wer_all"] <= 1.05 * base,
                versus(row, rs["fp32"]),
            ),
        ]
        ref = TUNED_LARGE if row.large_corpus else TUNED
        if ref in rs:
            out.append(
                (
                    f"... and within 5% relative of the fp32 model fine-tuned on the same data "
                    f"(*{ref}*)",
                    combo["wer_all"] <= 1.05 * rs[ref].results["wer_all"],
                    versus(row, rs[ref]),
                )
            )
    out += [
        (
            f"QAT 4-bit within 10% relative of fp32 WER (*{q4_row.name}*, the variant with "
            f"the lowest dev WER)",
            q4["wer_all"] <= 1.10 * base,
            versus(q4_row, rs["fp32"]),
        ),
        (
            f"QAT 4-bit better than PTQ 4-bit (*{q4_row.name}*)",
            q4["wer_all"] < p4["wer_all"],
            versus(q4_row, rs["PTQ 4-bit"]),
        ),
    ]
    for r in rs.values():
        if r.sparsity >= 0.7:
            res = r.results
            out.append(
                (
                    f"zero-skipping faster than dense at {r.name}",
                    res["rtf_sparse"] < res["rtf_dense"],
                    f"RTF {res['rtf_sparse']:.4f} vs {res['rtf_dense']:.4f} "
                    f"({res['speedup']:.2f}x); encoder alone "
                    f"{res['enc_rtf_dense'] / res['enc_rtf_sparse']:.2f}x",
                )
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = benchmark_parser(__doc__, "compression")
    p.add_argument("--runs", type=Path, default=Path("runs/compress"), help="fine-tuning runs")
    p.add_argument("--max-utts", type=int, default=0, help="WER utterances per split (0: all)")
    p.add_argument("--rtf-utts", type=int, default=60, help="utterances timed per row")
    p.add_argument("--max-steps", type=int, default=0, help="cap fine-tuning (smoke runs only)")
    p.add_argument("--only", nargs="*", default=None, help="row names to run (default: all)")
    p.add_argument("--block", default=DEFAULT_BLOCK, help="pruning block, rows x inputs")
    p.add_argument("--sweep-repeats", type=int, default=2000, help="timing repeats per kernel")
    p.add_argument(
        "--config",
        type=Path,
        default=REPO_ROOT / "configs" / "compress.yaml",
        help="fine-tuning recipe of every trained row",
    )
    p.add_argument(
        "--large-corpus",
        type=Path,
        default=None,
        help="corpus with more training hours for the '30 h corpus' rows (left out without it)",
    )
    args = p.parse_args(argv)
    block = tuple(int(v) for v in args.block.lower().split("x"))
    limit_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    set_torch_threads(2)  # fine-tuning uses both cores; timing below is single-threaded
    from lhotse import CutSet

    from edgeasr.compress.convert import pack_model, unpack_model
    from edgeasr.compress.packed import read_packed
    from edgeasr.fileio import sha256_file
    from edgeasr.train.data import FeatureCache, cuts_path

    base = args.model
    fp32_bytes = (base / "model.safetensors").stat().st_size
    caches = {
        s: FeatureCache.build(cuts_path(args.corpus, s), args.corpus / "feats") for s in SPLITS
    }
    cuts = even_subset(list(CutSet.from_file(cuts_path(args.corpus, "test"))), args.rtf_utts)
    audio = [c.load_audio()[0] for c in cuts]
    table = rows() if args.only is None else [r for r in rows() if r.name in args.only]
    if args.large_corpus is None:
        left_out = [r.name for r in table if r.large_corpus]
        if left_out:
            log.warning("no --large-corpus: leaving out %s", left_out)
        table = [r for r in table if not r.large_corpus]
    args.runs.mkdir(parents=True, exist_ok=True)
    for row in table:
        log.info("row %s", row.name)
        row_block = row.block or block
        src = (
            fine_tune(
                row,
                base,
                args.corpus,
                args.runs,
                args.max_steps,
                row_block,
                args.config,
                args.large_corpus,
            )
            if row.trained
            else base
        )
        packed = args.runs / f"{row.slug}.pack"
        # the zero map's block is the pruning block; unpruned rows keep single-weight zeros
        info = pack_model(
            src, packed, bits=min(row.bits, 16), block=row_block if row.sparsity else (1, 1)
        )
        # a row is re-measured only when its weights or the measurement changed, so adding a
        # row to a finished page costs that row alone (speed is a ratio within the row's run)
        key = {
            "packed": sha256_file(packed),
            "model": sha256_file(src / "model.safetensors"),
            "corpus": str(args.corpus.resolve()),
            **{k: getattr(args, k) for k in ("beam", "max_utts", "rtf_utts", "threads")},
            "per_utterance_errors": True,
        }
        cached = args.runs / f"{row.slug}.results.json"
        dev = dev_wer(args.runs / row.slug)  # read fresh: not part of the measurement
        if cached.exists() and (prior := json.loads(cached.read_text()))["key"] == key:
            row.results = {**prior["results"], "dev_wer": dev}
            log.info("%s: measured before (%s)", row.name, cached)
            continue
        pm = read_packed(packed)
        set_torch_threads(args.threads)
        model_dir = unpack_model(packed, args.runs / f"{row.slug}.unpacked")
        res: dict[str, Any] = {"bytes": info["bytes"] if row.bits < 32 else fp32_bytes}
        res["packed_bytes"] = info["bytes"]
        res["zeros"] = info["sparsity"]
        res["nonzero_params"] = sum(
            int((t.codes != 0).sum()) if hasattr(t, "codes") else int(t.size)
            for t in pm.tensors.values()
        )
        res.update(
            wer_of(
                src if row.bits == 32 else model_dir,
                caches,
                args.beam,
                args.max_utts,
                per_utterance=SPLITS,
            )
        )
        res.update(speed_of(packed, audio, args.beam))
        manifest = json.loads((src / "manifest.json").read_text())
        res["grid_distance"] = manifest.get("info", {}).get("compression", {}).get("grid_distance")
        done = args.runs / row.slug / "done"
        if done.exists():
            trained = json.loads(done.read_text())
            res.update({k: trained[k] for k in ("train_s", "epochs") if k in trained})
        row.results = res
        cached.write_text(json.dumps({"key": key, "results": res}))
        row.results["dev_wer"] = dev
        set_torch_threads(2)
        log.info(
            "%s: %s", row.name, {k: v for k, v in res.items() if not isinstance(v, dict | list)}
        )
    sweep = kernel_sweep(args.sweep_repeats)
    by_name = {r.name: r for r in table}

    from edgeasr.compress.quant import CLIP_BELOW_BITS
    from edgeasr.compress.training import DEFAULT_RATE_WEIGHT, SCALE_EVERY
    from edgeasr.train.config import load_experiment

    recipe = load_experiment(args.config).train
    distil = (
        f", distilling from the fp32 model at weight {recipe.distill_weight:g}"
        if recipe.distill_weight
        else ""
    )
    large_note = ""
    if args.large_corpus is not None:
        n_large = len(CutSet.from_file(cuts_path(args.large_corpus, "train")))
        large_note = (
            f"Rows marked *30 h corpus* train on all {n_large:,} training utterances of "
            f"`{args.large_corpus}` instead (`edgeasr corpus synth --hours 30 --seed 1 "
            f"--no-test-audio`; its dev split, where their dev WER comes from, is larger too). "
        )
    page = ResultsPage(args.name, "Compression: quantisation, pruning, packed files")
    page.add(
        f"Base: `{base}` (fp32 safetensors {fp32_bytes:,} bytes). Fine-tunes: `edgeasr compress` "
        f"with `{args.config.resolve().relative_to(REPO_ROOT)}` ({recipe.max_train_utts} "
        f"training utterances, LR {recipe.lr:g}{distil}) for the epochs of its column; "
        f"*fp32, fine-tuned* is the same recipe without compression. "
        f"{large_note}"
        f"Pruning: blocks {block[0]}x{block[1]} unless the row names its blocks, each matrix to "
        f"the target share (scope `{recipe.compression.prune.scope}`) unless the row says "
        f"*global* (one threshold over all matrices), by |w| unless the row says "
        f"*activation-aware* (|w| times its input's RMS on "
        f"{recipe.compression.prune.calibration_utts} training utterances, "
        f"`prune.saliency: activation`), cubic schedule "
        f"to the target by 60% of the steps unless the row says *one-shot* (the whole target "
        f"at the first step, so every step is left to recover); *reconstructed*: right after "
        f"that prune each row's kept weights are re-fitted by least squares to the row's dense "
        f"output on the same calibration utterances (`prune.reconstruct`, "
        f"`compress.sparsity.reconstruct_kept`). QAT per-channel symmetric with the "
        f"straight-through estimator, grid regulariser weight {REG_WEIGHT:g} ramped over the "
        f"first half unless the row names another weight or none. *Rate budget B bits*: the "
        f"rate regulariser (`compress.quant.rate_penalty`, an L1 pull on the integer codes, "
        f"hence on their code length) with a weight that a controller moves every "
        f"{SCALE_EVERY} steps to hold the estimated packed size (zero maps plus entropy-coded "
        f"codes) at B bits per compressed weight (`train.compression.rate_target_bits`), "
        f"starting at {DEFAULT_RATE_WEIGHT:g}; it can round kept weights to zero, so such a row "
        f"ends with more zeros than its mask's target (column *zeros*). Scales: the row maximum at "
        f"{CLIP_BELOW_BITS} bits, below that each row's least-squares clipping point "
        f"(`edgeasr.compress.quant.clipped_scale`), in PTQ and QAT alike. PTQ = the fp32 "
        f"weights rounded at pack time. Pruning-only "
        f"rows are packed at 16 bits (lossless for WER). WER: {', '.join(SPLITS)} "
        f"({'all' if not args.max_utts else args.max_utts} utterances each), beam {args.beam}, "
        f"on the packed weights. RTF: {len(audio)} test utterances through the device recogniser "
        f"reading the packed file, one thread, dense (numpy/BLAS) vs zero-skipping kernel; "
        f"*encoder speed-up*: the same run's time inside the encoder only (the rest is features "
        f"and beam search, which no kernel changes); *auto*: the runtime's default, which skips "
        f"zeros only in matrices sparse enough for it to pay (`runtime.kernels.zero_skip_pays`), "
        f"vs dense."
    )
    if all(n in by_name for n in ("fp32", "QAT int8 + 50% sparse", "QAT 4-bit", "PTQ 4-bit")):
        lines = [
            f"- **{'PASS' if ok else 'FAIL'}** {text}: {detail}"
            for text, ok, detail in bars(by_name, fp32_bytes)
        ]
        page.add("## Bars (issue 4)\n\n" + "\n".join(lines))
    hdr = [
        "model",
        "epochs",
        "non-zero params",
        "zeros",
        "bytes on disk",
        "vs fp32",
        "dev WER (greedy)",
        *[f"WER {s}" for s in SPLITS],
        "WER all",
        "grid dist.",
        "RTF dense",
        "RTF zero-skip",
        "speed-up",
        "encoder speed-up",
        "auto",
        "enc. MACs/frame (skip)",
    ]
    body = []
    for r in table:
        x = r.results
        gd = x.get("grid_distance")
        body.append(
            [
                r.name,
                str(x.get("epochs", "–")),
                f"{x['nonzero_params']:,}",
                pct(x["zeros"]),
                f"{x['bytes']:,}",
                f"1/{fp32_bytes / x['bytes']:.1f}",
                "–" if x.get("dev_wer") is None else pct(x["dev_wer"], 2),
                *[pct(x[f"wer_{s}"], 2) for s in SPLITS],
                pct(x["wer_all"], 2),
                "–" if gd is None else f"{gd:.3f}",
                f"{x['rtf_dense']:.4f}",
                f"{x['rtf_sparse']:.4f}",
                f"{x['speedup']:.2f}x",
                f"{x['enc_rtf_dense'] / x['enc_rtf_sparse']:.2f}x",
                f"{x['speedup_auto']:.2f}x",
                f"{x['macs_sparse'] / 1e6:.2f} M",
            ]
        )
    page.add("## Results\n\n" + markdown_table(hdr, body))
    page.add(
        "*dev WER*: the fine-tune's own dev evaluation (greedy search, its best epoch), which "
        "picks the regulariser weight for the bars. *grid dist.*: mean distance of the float "
        "weights to the nearest grid point before packing, in grid steps (0 = already on the "
        "grid, 0.25 = uniform); QAT packages are "
        "exported on the grid, so it is measured on the master weights at the end of training. "
        "*enc. MACs/frame*: encoder multiply-adds per 10 ms of audio as the zero-skipping kernel "
        "performs them (the dense kernel: "
        f"{table[0].results['macs_dense'] / 1e6:.2f} M)."
    )
    sw = markdown_table(
        [
            "block",
            "sparsity",
            *[f"{k} µs, {n}" for n in ("1 frame", "8 frames") for k in ("dense", "skip")],
        ],
        [
            [
                s["block"],
                pct(s["sparsity"], 0),
                *[
                    f"{s[f'{k}_us_{n}']:.1f}"
                    + (
                        ""
                        if k == "dense"
                        else (" ✓" if s[f"sparse_us_{n}"] < s[f"dense_us_{n}"] else "")
                    )
                    for n in (1, 8)
                    for k in ("dense", "sparse")
                ],
            ]
            for s in sweep
        ],
    )
    page.add(
        "## Where skipping zeros wins (one 1280x320 matrix, one thread)\n\n"
        "Blocks of *br*x1 keep or drop *br* consecutive output rows of one input. One frame is "
        "the recurrent product of a streaming LSTM step, 8 frames the input product of a chunk. "
        "✓: the zero-skipping kernel is faster than dense BLAS.\n\n" + sw
    )
    page.add("![WER vs bytes](compression.png)")
    page.data = {
        # per-utterance errors stay in each row's cache (runs/): they serve the intervals above
        "rows": [
            {"name": r.name, **{k: v for k, v in r.results.items() if not k.startswith("errors_")}}
            for r in table
        ],
        "kernel_sweep": sweep,
        "fp32_bytes": fp32_bytes,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot(table, fp32_bytes, args.out_dir / f"{args.name}.png")
    md, _ = page.write(args.out_dir)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
