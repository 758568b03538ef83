"""Accuracy benchmark: edgeasr vs pocketsphinx WER and real-time factor on the same audio.

Usage (from the repository root)::

    python benchmarks/accuracy.py --corpus data/corpus [--model models/edgeasr-small-en]
        [--max-utts N] [--threads 1] [--sets test,test_xengine,fsdd-test,speechocean762-test]

Eval sets: the synthetic ``test`` split (unseen voices of the training engines) and
``test_xengine`` (an engine never seen in training), read from lhotse manifests under
``<corpus>/manifests``; and the real recordings ``fsdd-test`` and ``speechocean762-test`` from the
shared data dir (see :mod:`edgeasr.corpus.real`). Each utterance is decoded by edgeasr (beam
search, features included in its time) and by pocketsphinx's bundled English model, one after the
other on the very same samples, alternating which goes first, so machine drift and cache effects
hit both equally. Everything runs on one thread by default, which is how a device would run it.

Writes ``docs/results/accuracy.{md,json,png}`` (or ``--out-dir``) and prints the tables.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from _common import (
    REPO_ROOT,
    ResultsPage,
    benchmark_parser,
    command_line,
    decoding_overrides,
    even_subset,
    limit_threads,
    markdown_table,
    num,
    package_beam,
    pct,
    pkg_version,
    set_torch_threads,
)

if TYPE_CHECKING:  # heavy imports happen in main(), after the thread limits are in place
    import numpy as np

log = logging.getLogger("accuracy")

SYNTHETIC_SETS = ("test", "test_xengine")
REAL_SETS = ("fsdd-test", "speechocean762-test")
ALL_SETS = SYNTHETIC_SETS + REAL_SETS
EDGEASR = "edgeasr"
POCKETSPHINX = "pocketsphinx"
SYSTEMS = (EDGEASR, POCKETSPHINX)

SET_NOTES = {
    "test": "synthetic, TTS voices never used in training, from the engines used in training",
    "test_xengine": "synthetic, from a TTS engine held out of training entirely (closest thing "
    "to new speakers we can synthesise)",
    "fsdd-test": "real: Free Spoken Digit Dataset test split, isolated digits, 6 adult male "
    "speakers, 8 kHz upsampled to 16 kHz",
    "speechocean762-test": "real: read sentences and digit strings by Mandarin-L1 speakers, "
    "about half children (accented and child speech)",
}


# ------------------------------------------------------------------------------------------------
# Eval items
# ------------------------------------------------------------------------------------------------


@dataclass
class Utt:
    """One utterance to score; ``group`` is the breakdown key (TTS engine, or age band)."""

    id: str
    text: str
    group: str
    voice: str
    load: Callable[[], np.ndarray]


def _cut_engine(cut: Any) -> tuple[str, str, str]:
    """(reference, voice, engine) of a synthetic cut, tolerant of where ``engine`` is stored."""
    from edgeasr.corpus.text import normalize_text

    sup = cut.supervisions[0]
    voice = sup.speaker or ""
    engine = None
    for custom in (sup.custom, getattr(cut, "custom", None)):
        if custom and custom.get("engine"):
            engine = str(custom["engine"])
            break
    if engine is None:
        engine = voice.partition(":")[0] or "unknown"
    return normalize_text(sup.text or ""), voice, engine


def _load_cut(cut: Any) -> np.ndarray:
    """Cut samples as float32 at 16 kHz (resampled only if a manifest was made at another rate)."""
    from edgeasr.audio import SAMPLE_RATE, resample_audio

    x = cut.load_audio()[0]
    return resample_audio(x, cut.sampling_rate, SAMPLE_RATE)


def load_synthetic(corpus: Path, split: str) -> list[Utt] | None:
    """Utterances of a synthetic split, or None if its manifest is missing."""
    from lhotse import CutSet

    path = corpus / "manifests" / f"{split}_cuts.jsonl.gz"
    if not path.is_file():
        log.warning("synthetic split %s not found (%s); skipping it", split, path)
        return None
    utts = []
    for cut in CutSet.from_file(path):
        text, voice, engine = _cut_engine(cut)
        utts.append(Utt(cut.id, text, engine, voice, lambda c=cut: _load_cut(c)))
    return utts


def _age_band(age: str) -> str:
    try:
        a = int(age)
    except ValueError:
        return "age unknown"
    return "child 6-12" if a <= 12 else ("teen 13-18" if a <= 18 else "adult 19+")


def load_real(name: str) -> list[Utt] | None:
    """Utterances of a real set, grouped by age band where the set records age; None if absent."""
    from edgeasr.corpus.real import load_real_set

    items = load_real_set(name)
    if not items:
        return None
    return [
        Utt(
            it.id,
            it.text,
            _age_band(it.meta["age"]) if "age" in it.meta else "all",
            it.speaker,
            it.load,
        )
        for it in items
    ]


# ------------------------------------------------------------------------------------------------
# Systems and the interleaved run
# ------------------------------------------------------------------------------------------------


class System(Protocol):
    name: str

    def transcribe(self, samples: np.ndarray) -> str: ...


class EdgeAsrSystem:
    """edgeasr's offline Transcriber; its time includes fbank extraction (as on a device)."""

    name = EDGEASR

    def __init__(self, model_dir: Path, beam: int, one_pass: bool = False) -> None:
        import torch

        from edgeasr.corpus.text import normalize_text
        from edgeasr.decode import Transcriber

        self._tr = Transcriber.from_dir(
            model_dir, method="beam", beam=beam, **decoding_overrides(one_pass)
        )
        self._one_pass = one_pass
        self._inference_mode = torch.inference_mode
        self._normalize = normalize_text

    @property
    def decoding(self) -> str:
        """How it decodes, for the page: the beam and the second pass if tuned into the package."""
        r = self._tr.rescorer
        out = f"beam search, beam {self._tr.beam}"
        if self._one_pass:
            out += ", the package's tuned second pass turned off (`--one-pass`)"
        if r.enabled:
            out += (
                f", then the N-best reranked with the model's CTC head (weight {r.ctc_weight}) "
                f"and a word bonus of {r.word_bonus}, both tuned on dev into the package"
            )
        return out

    def transcribe(self, samples: np.ndarray) -> str:
        with self._inference_mode():
            return self._normalize(self._tr.transcribe(samples))


@dataclass
class UttResult:
    id: str
    ref: str
    group: str
    voice: str
    duration: float
    hyp: dict[str, str] = field(default_factory=dict)
    secs: dict[str, float] = field(default_factory=dict)


def run_set(name: str, utts: Sequence[Utt], systems: Sequence[System]) -> list[UttResult]:
    """Decode every utterance with every system, alternating the order per utterance."""
    from tqdm import tqdm

    out: list[UttResult] = []
    for i, u in enumerate(tqdm(utts, desc=name, unit="utt", dynamic_ncols=True)):
        samples = u.load()
        r = UttResult(u.id, u.text, u.group, u.voice, len(samples) / 16000.0)
        order = systems if i % 2 == 0 else list(reversed(systems))
        for s in order:
            t0 = time.perf_counter()
            hyp = s.transcribe(samples)
            r.secs[s.name] = time.perf_counter() - t0
            r.hyp[s.name] = hyp
        out.append(r)
    return out


def summarize(results: Sequence[UttResult], systems: Sequence[str]) -> dict[str, Any]:
    """WER and RTF per system, and the pocketsphinx/edgeasr RTF ratio, for a list of results."""
    from edgeasr.decode import word_error_rate

    refs = [r.ref for r in results]
    audio = sum(r.duration for r in results)
    out: dict[str, Any] = {
        "num_utts": len(results),
        "num_ref_words": sum(len(x.split()) for x in refs),
        "audio_s": round(audio, 3),
    }
    for s in systems:
        secs = sum(r.secs[s] for r in results)
        out[s] = {
            "wer": word_error_rate(refs, [r.hyp[s] for r in results]),
            "proc_s": round(secs, 3),
            "rtf": secs / audio if audio > 0 else None,
        }
    if EDGEASR in systems and POCKETSPHINX in systems:
        e, p = out[EDGEASR]["rtf"], out[POCKETSPHINX]["rtf"]
        out["rtf_ratio_ps_over_edgeasr"] = p / e if e else None
    return out


def _grouped(
    results: Sequence[UttResult], key: Callable[[UttResult], str], systems: Sequence[str]
) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[UttResult]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    return {g: summarize(rs, systems) for g, rs in sorted(groups.items())}


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def main_table(summaries: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, s in summaries.items():
        rows.append(
            [
                name,
                s["num_utts"],
                f"{s['audio_s'] / 60:.1f}",
                pct(s[EDGEASR]["wer"]),
                pct(s[POCKETSPHINX]["wer"]),
                num(s[EDGEASR]["rtf"]),
                num(s[POCKETSPHINX]["rtf"]),
                num(s.get("rtf_ratio_ps_over_edgeasr"), 2),
            ]
        )
    return markdown_table(
        [
            "set",
            "utts",
            "audio min",
            "edgeasr WER",
            "pocketsphinx WER",
            "edgeasr RTF",
            "pocketsphinx RTF",
            "RTF ratio ps/edgeasr",
        ],
        rows,
    )


def group_table(summaries: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, s in summaries.items():
        for g, gs in s["by_group"].items():
            rows.append(
                [
                    name,
                    g,
                    gs["num_utts"],
                    pct(gs[EDGEASR]["wer"]),
                    pct(gs[POCKETSPHINX]["wer"]),
                    num(gs[EDGEASR]["rtf"]),
                    num(gs[POCKETSPHINX]["rtf"]),
                ]
            )
    return markdown_table(
        [
            "set",
            "engine / group",
            "utts",
            "edgeasr WER",
            "pocketsphinx WER",
            "edgeasr RTF",
            "pocketsphinx RTF",
        ],
        rows,
        align="llrrrrr",
    )


def plot(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    """Grouped WER bars: per set (left) and per engine within the synthetic sets (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels: list[tuple[str, list[str], list[dict[str, Any]]]] = [
        ("WER per eval set (bars clipped at 150%)", list(summaries), list(summaries.values())),
    ]
    eng_labels, eng_stats = [], []
    for name in SYNTHETIC_SETS:
        for g, gs in summaries.get(name, {}).get("by_group", {}).items():
            eng_labels.append(f"{name}\n{g}")
            eng_stats.append(gs)
    if eng_labels:
        panels.append(("WER per TTS engine (synthetic sets)", eng_labels, eng_stats))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6 + 5 * (len(panels) - 1), 4.2), squeeze=False
    )
    width = 0.38
    for ax, (title, labels, stats) in zip(axes[0], panels, strict=True):
        x = np.arange(len(labels))
        for k, (sysname, color) in enumerate([(EDGEASR, "tab:blue"), (POCKETSPHINX, "tab:orange")]):
            vals = [100.0 * min(st[sysname]["wer"], 1.5) for st in stats]
            bars = ax.bar(x + (k - 0.5) * width, vals, width, label=sysname, color=color)
            ax.bar_label(
                bars,
                labels=[f"{100 * st[sysname]['wer']:.0f}" for st in stats],
                fontsize=7,
                padding=1,
            )
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel("WER (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_page(
    summaries: dict[str, dict[str, Any]],
    missing: list[str],
    args: argparse.Namespace,
    ps_files: dict[str, str],
    examples: dict[str, list[dict[str, Any]]],
    wall: dict[str, float],
    command: str,
    decoding: str | None = None,
) -> ResultsPage:
    page = ResultsPage(
        name=args.name, title="Accuracy: edgeasr vs pocketsphinx on the same audio", command=command
    )
    page.machine["pocketsphinx"] = pkg_version("pocketsphinx")
    notes = [
        f"- `{n}`: {SET_NOTES[n]}" + (" — **not found, skipped**" if n in missing else "")
        for n in args.sets
    ]
    page.add(
        f"edgeasr model: `{args.model}` ({decoding or f'beam search, beam {args.beam}'}); "
        "pocketsphinx: its bundled "
        "US-English acoustic model, LM and dictionary, whole-utterance decoding. Both decode the "
        "same 16 kHz samples, interleaved per utterance (alternating which goes first), on "
        f"{args.threads} thread(s). WER is corpus-level (errors / reference words) after the same "
        "text normalisation for references and hypotheses. RTF = processing wall time / audio "
        "duration (edgeasr includes fbank extraction; audio loading is excluded); the ratio "
        "> 1 means edgeasr is faster."
        + (
            f" At most {args.max_utts} utterances per set (evenly strided subset)."
            if args.max_utts
            else " All utterances of every set."
        )
    )
    page.add("Eval sets:\n\n" + "\n".join(notes))
    if summaries:
        page.add("## Per set\n\n" + main_table(summaries))
        page.add(
            "## Per TTS engine (synthetic) and age band (speechocean762)\n\n"
            + group_table(summaries)
        )
        page.add(f"![WER per set and per engine]({args.name}.png)")
    page.data = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "pocketsphinx_model": ps_files,
        "missing_sets": missing,
        "wall_s_per_set": {k: round(v, 1) for k, v in wall.items()},
        "sets": summaries,
        "examples": examples,
    }
    return page


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = benchmark_parser(__doc__, "accuracy", package_beam=True)
    p.add_argument(
        "--max-utts", type=int, default=0, help="cap per set (evenly strided subset); 0 = all"
    )
    p.add_argument(
        "--sets",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(ALL_SETS),
        help="comma-separated subset of " + ",".join(ALL_SETS),
    )
    args = p.parse_args(argv)
    unknown = [s for s in args.sets if s not in ALL_SETS]
    if unknown:
        p.error(f"unknown set(s) {unknown}; choose from {list(ALL_SETS)}")
    return args


def _resolve(path: Path) -> Path:
    """Relative paths are taken from the current directory, else from the repo root."""
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    limit_threads(args.threads)  # before numpy/torch load (all heavy imports are below)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    set_torch_threads(args.threads)

    from edgeasr.baselines.pocketsphinx_asr import PocketSphinxASR

    model_dir = _resolve(args.model)
    if not (model_dir / "manifest.json").is_file():
        log.error("edgeasr model package not found at %s (pass --model DIR)", model_dir)
        return 2
    args.beam = package_beam(model_dir, args.beam)
    systems: list[System] = [EdgeAsrSystem(model_dir, args.beam, args.one_pass), PocketSphinxASR()]
    ps_files = {k: Path(v).name for k, v in systems[1].model_files.items()}  # type: ignore[attr-defined]

    corpus = _resolve(args.corpus)
    sets: dict[str, list[Utt]] = {}
    missing: list[str] = []
    for name in args.sets:
        utts = load_synthetic(corpus, name) if name in SYNTHETIC_SETS else load_real(name)
        if not utts:
            missing.append(name)
            continue
        sets[name] = even_subset(utts, args.max_utts)
    if not sets:
        log.error("no eval set found (corpus %s, shared data dir); nothing to do", corpus)
        return 2

    # Untimed warm-up so one-off costs (torch lazy init, page faults) land on neither system.
    warm = next(iter(sets.values()))[0].load()[:16000]
    for s in systems:
        s.transcribe(warm)

    names = [s.name for s in systems]
    summaries: dict[str, dict[str, Any]] = {}
    examples: dict[str, list[dict[str, Any]]] = {}
    wall: dict[str, float] = {}
    for name, utts in sets.items():
        t0 = time.perf_counter()
        results = run_set(name, utts, systems)
        wall[name] = time.perf_counter() - t0
        summary = summarize(results, names)
        summary["by_group"] = _grouped(results, lambda r: r.group, names)
        summary["by_voice"] = _grouped(results, lambda r: r.voice, names)
        summaries[name] = summary
        examples[name] = [
            {"id": r.id, "ref": r.ref, **{f"hyp_{k}": v for k, v in r.hyp.items()}}
            for r in even_subset(results, 5)
        ]
        log.info(
            "%s: %d utts in %.1f s; WER edgeasr %s, pocketsphinx %s",
            name,
            len(results),
            wall[name],
            pct(summary[EDGEASR]["wer"]),
            pct(summary[POCKETSPHINX]["wer"]),
        )

    command = command_line() if argv is None else command_line([__file__, *argv])
    decoding = systems[0].decoding  # type: ignore[attr-defined]
    page = build_page(summaries, missing, args, ps_files, examples, wall, command, decoding)
    md, js = page.write(args.out_dir)
    png = args.out_dir / f"{args.name}.png"
    plot(summaries, png)
    print(main_table(summaries))
    print()
    print(group_table(summaries))
    print(f"\nwrote {md}, {js}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
