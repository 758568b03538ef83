"""Contextual-biasing benchmark: name recall and WER with and without shallow fusion.

Usage (from the repository root)::

    python benchmarks/biasing.py --corpus data/corpus [--model models/edgeasr-small-en]
        [--n-synth 150] [--n-dev-synth 150] [--context-size 100] [--boosts 1.0 1.5 2.0 3.0]
    python benchmarks/biasing.py --neural --model MODEL_WITH_BIASER [--gate-offsets -2 -1 0]
        [--neural-boost 0]

With ``--neural`` the biased runs use the model's trained neural biasing module (TCPGen,
:mod:`edgeasr.model.biaser`, from ``edgeasr train-biaser``) and the sweep is over its gate
offset instead of the shallow-fusion boost; the page is ``biasing-neural``.

The streaming device runtime (``Recognizer``, onnx fp32, exported from ``--model`` into a
temporary directory) decodes each utterance once without context and once per boost with a
per-stream contact list (``create_stream(context=[...])``). Eval material:

* ``long-tail (corpus)``: utterances of the ``test`` and ``test_xengine`` splits whose reference
  contains a name of :data:`edgeasr.corpus.text.RARE_NAMES` (the long tail: in training, a few
  times each);
* ``long-tail (synth)`` and ``held-out (synth)``: utterances made by
  ``generate_utterances(N, seed, names=RARE_NAMES / HELD_OUT_NAMES)`` and synthesised like the
  corpus (same recipe, voices drawn from the corpus' ``test`` voice pool, never heard in
  training); long-tail texts that occur verbatim in the training text are skipped. Audio is
  cached under ``<corpus>/biasing/`` (deterministic by seed, so reruns are fast);
* ``no-name``: the other utterances of ``test`` and ``test_xengine`` (no context name in the
  reference), to measure over-triggering.

The boost is chosen on the same kinds of sets built from the ``dev`` split and ``dev`` voices,
never on the reported test numbers. Writes ``docs/results/biasing.{md,json,png}`` (or
``--out-dir``) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (
    REPO_ROOT,
    ResultsPage,
    benchmark_parser,
    command_line,
    decoding_overrides,
    limit_threads,
    markdown_table,
    num,
    package_beam,
    pct,
    pkg_version,
    second_pass_note,
    set_torch_threads,
)

if TYPE_CHECKING:  # heavy imports happen in main(), after the thread limits are in place
    import numpy as np

    from edgeasr.runtime import Recognizer

log = logging.getLogger("biasing")

EVAL_SPLITS = ("test", "test_xengine")
TUNE_SPLIT = "dev"
LT_CORPUS, LT_SYNTH, HO_SYNTH, NO_NAME = (
    "long-tail (corpus)",
    "long-tail (synth)",
    "held-out (synth)",
    "no-name",
)
NAME_SETS = (LT_CORPUS, LT_SYNTH, HO_SYNTH)
ALL_NAMES = "all name sets"  # pooled row of NAME_SETS
SET_ORDER = (*NAME_SETS, ALL_NAMES, NO_NAME)
FINAL, ONE_BEST = "final_end", "one_best"  # the two transcripts read from every stream
MAX_WER_RISE = 0.005  # the bar: no-name WER may rise by at most 0.5 percentage points
MIN_ERR_REDUCTION = 0.5  # the bar: name errors at least halved


# ------------------------------------------------------------------------------------------------
# Names, context lists and the name metric (pure Python, unit-tested)
# ------------------------------------------------------------------------------------------------


def _dedupe(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def name_pools() -> dict[str, tuple[str, ...]]:
    """The name lists context lists are drawn from (all single words, normalised)."""
    from edgeasr.corpus.text import FIRST_NAMES, HELD_OUT_NAMES, RARE_NAMES

    return {"held_out": HELD_OUT_NAMES, "rare": RARE_NAMES, "first": FIRST_NAMES}


def target_names() -> frozenset[str]:
    """Names whose occurrences are scored: the long tail and the held-out names."""
    pools = name_pools()
    return frozenset(pools["rare"]) | frozenset(pools["held_out"])


def name_words(text: str) -> list[str]:
    """Words of ``text`` for name matching: a possessive ``'s`` is dropped ("engstrom's" is an
    occurrence of the name "engstrom"); WER is computed on the text as it is."""
    return [w[:-2] if w.endswith("'s") and len(w) > 2 else w for w in text.split()]


def targets_in(text: str, targets: frozenset[str]) -> tuple[str, ...]:
    """Target names spoken in ``text`` (a normalised reference), each once, in order."""
    return _dedupe(w for w in name_words(text) if w in targets)


def context_list(
    utt_id: str, text: str, targets: Sequence[str], k: int, pool: Sequence[str], seed: int
) -> list[str]:
    """A contact list of ``k`` names: the utterance's ``targets`` plus deterministic distractors.

    Distractors are sampled without replacement from ``pool`` (held-out, long-tail and common
    first names), leaving out every name with a word in the reference, so the only context names
    an utterance contains are its targets (none for no-name utterances). The order is shuffled so
    the true name's position carries no information. Depends only on (seed, utt_id, text, pool).
    """
    words = set(name_words(text))
    cands = [n for n in _dedupe(pool) if n not in targets and not set(n.split()) & words]
    rng = random.Random(f"edgeasr-biasing-context:{seed}:{utt_id}")
    n = max(0, min(k - len(targets), len(cands)))
    out = list(targets) + rng.sample(cands, n)
    rng.shuffle(out)
    return out


def count_phrase(phrase: Sequence[str], words: Sequence[str]) -> int:
    """Non-overlapping occurrences of the word sequence ``phrase`` in ``words`` (left to right)."""
    n, i, m = 0, 0, len(phrase)
    if m == 0:
        return 0
    while i + m <= len(words):
        if list(words[i : i + m]) == list(phrase):
            n += 1
            i += m
        else:
            i += 1
    return n


@dataclass
class NameCounts:
    """Context-name occurrences of one or more utterances.

    ``ref``: occurrences of context names in the references; ``hit``: of those, how many the
    hypothesis also has (per phrase, min of the two counts); ``false``: occurrences of context
    names in the hypothesis beyond the reference's count (insertions / substitutions *into* a
    name); ``utts_false``: utterances with at least one such false name.
    """

    ref: int = 0
    hit: int = 0
    false: int = 0
    utts_false: int = 0

    def __iadd__(self, other: NameCounts) -> NameCounts:
        self.ref += other.ref
        self.hit += other.hit
        self.false += other.false
        self.utts_false += other.utts_false
        return self

    @property
    def recall(self) -> float | None:
        return self.hit / self.ref if self.ref else None

    @property
    def error(self) -> float | None:
        r = self.recall
        return None if r is None else 1.0 - r


def name_counts(ref: str, hyp: str, context: Sequence[str]) -> NameCounts:
    """Score one utterance's hypothesis against its context list (phrases as word sequences)."""
    rw, hw = name_words(ref), name_words(hyp)
    c = NameCounts()
    for phrase in _dedupe(" ".join(p.split()) for p in context if p.strip()):
        words = phrase.split()
        r, h = count_phrase(words, rw), count_phrase(words, hw)
        c.ref += r
        c.hit += min(r, h)
        c.false += max(0, h - r)
    c.utts_false = int(c.false > 0)
    return c


def relative_reduction(before: float | None, after: float | None) -> float | None:
    """1 - after/before (0.5 = halved); None when undefined (no errors before)."""
    if before is None or after is None or before <= 0:
        return None
    return 1.0 - after / before


def choose_boost(
    baseline: dict[str, Any],
    sweep: dict[str, dict[str, Any]],
    max_rise: float = MAX_WER_RISE,
    knob: str = "boost",
) -> tuple[float, str]:
    """Pick a boost from a (dev) sweep: best pooled name recall whose no-name WER rise is allowed.

    ``baseline`` and each ``sweep[boost]`` are per-set summaries (as from :func:`summarize_sets`)
    of the final_end transcripts. Among boosts with a no-name WER rise of at most ``max_rise``,
    the highest pooled name recall wins, ties going to the smaller boost; if none qualifies, the
    boost with the smallest rise. Returns (boost, reason).
    """
    base_wer = baseline[NO_NAME]["wer"] if NO_NAME in baseline else 0.0

    def rise(s: dict[str, Any]) -> float:
        return (s[NO_NAME]["wer"] - base_wer) if NO_NAME in s else 0.0

    def recall(s: dict[str, Any]) -> float:
        r = s.get(ALL_NAMES, {}).get("recall")
        return -1.0 if r is None else r

    boosts = sorted(sweep, key=float)
    ok = [b for b in boosts if rise(sweep[b]) <= max_rise + 1e-12]
    if ok:
        best = max(ok, key=lambda b: (recall(sweep[b]), -float(b)))
        return float(best), (
            f"highest pooled name recall among {knob}s whose no-name WER rise is <= "
            f"{100 * max_rise:.1f} points ({len(ok)} of {len(boosts)} qualify)"
        )
    best = min(boosts, key=lambda b: (rise(sweep[b]), float(b)))
    return float(best), f"no {knob} keeps the no-name WER rise within the bar: smallest rise"


# ------------------------------------------------------------------------------------------------
# Eval items
# ------------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One utterance with its reference, the names spoken in it and its contact list."""

    id: str
    text: str
    set: str
    voice: str
    engine: str
    targets: tuple[str, ...]
    context: tuple[str, ...]
    samples: np.ndarray = field(repr=False)

    @property
    def duration(self) -> float:
        return len(self.samples) / 16000.0


def build_items(
    corpus: Path,
    cache: Path,
    splits: Sequence[str],
    voice_split: str,
    n_synth: int,
    seed: int,
    k: int,
    tag: str,
) -> tuple[list[Item], list[str]]:
    """The eval items of one side (``tag`` "test" or "dev"); also the corpus splits not found."""
    from accuracy import load_synthetic

    from edgeasr.corpus.extra import load_flac, synth_texts, synthesize_beside

    targets = target_names()
    pools = name_pools()
    pool = _dedupe([*pools["held_out"], *pools["rare"], *pools["first"]])
    items: list[Item] = []
    missing: list[str] = []

    def add(uid: str, text: str, set_: str, voice: str, engine: str, x: np.ndarray) -> None:
        tg = targets_in(text, targets)
        if set_ == NO_NAME and tg:
            set_ = LT_CORPUS  # (a held-out name never occurs in the corpus)
        ctx = context_list(uid, text, tg, k, pool, seed)
        items.append(Item(uid, text, set_, voice, engine, tg, tuple(ctx), x))

    for split in splits:
        utts = load_synthetic(corpus, split)
        if not utts:
            missing.append(split)
            continue
        for u in utts:
            add(u.id, u.text, NO_NAME, u.voice, u.group, u.load())

    if n_synth > 0:
        train_txt = corpus / "manifests" / "train_text.txt"
        train = set(train_txt.read_text().splitlines()) if train_txt.is_file() else set()
        for set_, names, short in (
            (LT_SYNTH, pools["rare"], "longtail"),
            (HO_SYNTH, pools["held_out"], "heldout"),
        ):
            split = f"biasing-{short}-{tag}-s{seed}"
            texts = synth_texts(n_synth, seed, names, f"biasing-{short}-{tag}", train)
            for rec in synthesize_beside(corpus, voice_split, cache, split, texts):
                eng = rec["custom"]["engine"]
                add(rec["id"], rec["text"], set_, rec["speaker"], eng, load_flac(rec["path"]))
    return items, missing


def rare_train_counts(corpus: Path) -> dict[str, int] | None:
    """How often each long-tail name occurs in the training text (None without train_text)."""
    path = corpus / "manifests" / "train_text.txt"
    if not path.is_file():
        return None
    rare = name_pools()["rare"]
    want = set(rare)
    cnt: Counter[str] = Counter()
    with path.open() as f:
        for line in f:
            cnt.update(w for w in line.split() if w in want)
    return {n: cnt[n] for n in rare}


# ------------------------------------------------------------------------------------------------
# Decoding and summaries
# ------------------------------------------------------------------------------------------------


def decode_item(rec: Recognizer, item: Item, use_context: bool, chunk: int) -> dict[str, str]:
    """Stream one utterance; return the final_end text and the biased 1-best (last partial).

    The last ``partial`` is the stream's best hypothesis after the last frame, ranked by
    log-probability plus context bonus (see ``search.beam.nbest``); ``final_end`` is what the
    runtime reports as the result.
    """
    st = rec.create_stream(context=list(item.context) if use_context else None)
    events = []
    x = item.samples
    for start in range(0, len(x), chunk):
        events += st.accept_waveform(x[start : start + chunk])
    events += st.input_finished()
    finals = [e.text for e in events if e.kind == "final_end"]
    partials = [e.text for e in events if e.kind == "partial"]
    if len(finals) > 1:
        log.warning("%s: %d final_end events; joining them", item.id, len(finals))
    return {FINAL: " ".join(finals).strip(), ONE_BEST: partials[-1] if partials else ""}


def decode_all(
    rec: Recognizer, items: Sequence[Item], use_context: bool, chunk: int, desc: str
) -> tuple[dict[str, dict[str, str]], float]:
    from tqdm import tqdm

    out: dict[str, dict[str, str]] = {}
    t0 = time.perf_counter()
    for it in tqdm(items, desc=desc, unit="utt", disable=None, leave=False):
        out[it.id] = decode_item(rec, it, use_context, chunk)
    return out, time.perf_counter() - t0


def summarize(items: Sequence[Item], hyps: dict[str, dict[str, str]], kind: str) -> dict[str, Any]:
    """Name counts, recall and WER of ``items`` for one transcript kind."""
    from edgeasr.decode import word_error_rate

    c = NameCounts()
    for it in items:
        c += name_counts(it.text, hyps[it.id][kind], it.context)
    refs = [it.text for it in items]
    return {
        "utts": len(items),
        "ref_words": sum(len(r.split()) for r in refs),
        "name_occurrences": c.ref,
        "name_hits": c.hit,
        "recall": c.recall,
        "name_error": c.error,
        "false_names": c.false,
        "utts_with_false_names": c.utts_false,
        "false_names_per_100_utts": 100.0 * c.false / len(items) if items else None,
        "wer": word_error_rate(refs, [hyps[it.id][kind] for it in items]) if items else None,
    }


def summarize_sets(
    items: Sequence[Item], hyps: dict[str, dict[str, str]], kind: str
) -> dict[str, dict[str, Any]]:
    """Per set, plus the pooled name sets (:data:`ALL_NAMES`); empty sets are left out."""
    out: dict[str, dict[str, Any]] = {}
    for s in SET_ORDER:
        members = (
            [it for it in items if it.set in NAME_SETS]
            if s == ALL_NAMES
            else [it for it in items if it.set == s]
        )
        if members:
            out[s] = summarize(members, hyps, kind)
    return out


def compare(base: dict[str, Any], biased: dict[str, Any]) -> dict[str, Any]:
    """With vs without biasing for every set of two :func:`summarize_sets` results."""
    out: dict[str, Any] = {}
    for s, b in base.items():
        w = biased[s]
        out[s] = {
            "without": b,
            "with": w,
            "name_error_reduction": relative_reduction(b["name_error"], w["name_error"]),
            "wer_change": None if b["wer"] is None else w["wer"] - b["wer"],
        }
    return out


def bar_verdicts(cmp: dict[str, Any]) -> dict[str, Any]:
    """The bar on test: name errors at least halved; no-name WER up by at most 0.5 points."""
    out: dict[str, Any] = {}
    for s in (*NAME_SETS, ALL_NAMES):
        if s in cmp and cmp[s]["without"]["name_occurrences"]:
            red = cmp[s]["name_error_reduction"]
            out[f"name_errors_halved[{s}]"] = {
                "value": red,
                "pass": red is not None and red >= MIN_ERR_REDUCTION,
            }
    if NO_NAME in cmp:
        rise = cmp[NO_NAME]["wer_change"]
        out["no_name_wer_rise"] = {"value": rise, "pass": rise <= MAX_WER_RISE + 1e-12}
    return out


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def bar_met(verdicts: dict[str, Any]) -> bool:
    """The headline verdict: pooled name errors halved and the no-name WER rise within bounds."""
    keys = (f"name_errors_halved[{ALL_NAMES}]", "no_name_wer_rise")
    return all(k in verdicts and verdicts[k]["pass"] for k in keys)


def results_table(cmp: dict[str, Any]) -> str:
    rows = []
    for s, c in cmp.items():
        b, w = c["without"], c["with"]
        rows.append(
            [
                s,
                b["utts"],
                b["name_occurrences"],
                pct(b["recall"]),
                pct(w["recall"]),
                pct(b["name_error"]),
                pct(w["name_error"]),
                pct(c["name_error_reduction"], 0),
                pct(b["wer"], 2),
                pct(w["wer"], 2),
                _signed_pp(c["wer_change"]),
                f"{b['false_names']} / {w['false_names']}",
            ]
        )
    return markdown_table(
        [
            "set",
            "utts",
            "names",
            "recall w/o",
            "recall with",
            "name err w/o",
            "name err with",
            "name err reduction",
            "WER w/o",
            "WER with",
            "WER change",
            "false names w/o / with",
        ],
        rows,
    )


def _signed_pp(x: float | None) -> str:
    return "–" if x is None else f"{100.0 * x:+.2f} pp"


def sweep_table(
    baseline: dict[str, Any],
    sweep: dict[str, dict[str, Any]],
    chosen: float,
    knob: str = "boost",
) -> str:
    sets = [s for s in (*NAME_SETS, ALL_NAMES) if s in baseline]
    headers = [knob, *[f"recall {s}" for s in sets], "no-name WER", "change", "false names"]
    rows = []
    for label, s in [("none (no context)", baseline)] + [
        (f"{float(b):g}" + (" (chosen)" if float(b) == chosen else ""), sweep[b])
        for b in sorted(sweep, key=float)
    ]:
        nn = s.get(NO_NAME)
        base_nn = baseline.get(NO_NAME)
        rows.append(
            [
                label,
                *[pct(s[x]["recall"]) for x in sets],
                pct(nn["wer"], 2) if nn else "–",
                _signed_pp(nn["wer"] - base_nn["wer"]) if nn and base_nn else "–",
                nn["false_names"] if nn else "–",
            ]
        )
    return markdown_table(headers, rows)


def oracle_table(
    baseline: dict[str, Any], oracle: dict[str, dict[str, Any]], knob: str = "boost"
) -> str:
    sets = [s for s in (*NAME_SETS, ALL_NAMES) if s in baseline[FINAL]]
    rows = [["none (no context)", *[pct(baseline[FINAL][s]["recall"]) for s in sets], "–"]]
    for b in sorted(oracle, key=float):
        o = oracle[b]
        rows.append(
            [
                f"{float(b):g}",
                *[f"{pct(o[FINAL][s]['recall'])} ({pct(o[ONE_BEST][s]['recall'])})" for s in sets],
                o[FINAL][ALL_NAMES]["false_names"] if ALL_NAMES in o[FINAL] else "–",
            ]
        )
    return markdown_table(
        [knob, *[f"recall {s}: final_end (1-best)" for s in sets], "false names (repeats)"],
        rows,
    )


def plot(
    runs: dict[str, dict[str, Any]],
    chosen: float,
    path: Path,
    kind: str = FINAL,
    knob: str = "boost",
) -> None:
    """Name recall (left) and no-name WER change (right) against the boost; 0 = no context.
    Against another ``knob`` (the neural module's gate offset) "no context" is drawn at the
    left end of the axis instead.

    Left: pooled recall on dev (dashed) and test (thick), test per set (thin), and the test
    recall with an oracle contact list (dotted). Right: symlog scale, so that the 0.5-point bar
    and large rises are both readable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for side, run in runs.items():
        base, sweep = run["baseline"][kind], run["sweep"]
        bs = sorted(sweep, key=float)
        x0 = 0.0 if knob == "boost" else min(float(b) for b in bs) - 1.0
        xs = [x0] + [float(b) for b in bs]
        series = [base] + [sweep[b][kind] for b in bs]
        sets = (*NAME_SETS, ALL_NAMES) if side == "test" else (ALL_NAMES,)
        for s in sets:
            if s in base and base[s]["name_occurrences"]:
                pooled = s == ALL_NAMES
                ax1.plot(
                    xs,
                    [100 * (x[s]["recall"] or 0) for x in series],
                    "--" if side == "dev" else "-",
                    marker="o",
                    ms=4 if pooled else 3,
                    label=f"{side}: {s}",
                    lw=2.4 if pooled and side == "test" else 1.6 if pooled else 0.9,
                )
        oracle = run.get("oracle")
        if oracle and ALL_NAMES in base:
            ax1.plot(
                xs,
                [100 * (base[ALL_NAMES]["recall"] or 0)]
                + [100 * (oracle[b][kind][ALL_NAMES]["recall"] or 0) for b in bs],
                ":",
                marker="s",
                ms=3,
                color="black",
                label=f"{side}: all names, oracle list (true names only)",
            )
        if NO_NAME in base:
            ax2.plot(
                xs,
                [100 * (x[NO_NAME]["wer"] - base[NO_NAME]["wer"]) for x in series],
                "--" if side == "dev" else "-",
                marker="o",
                label=f"{side}: no-name WER change",
            )
    ax2.axhline(100 * MAX_WER_RISE, color="red", lw=0.9, ls=":", label="bar: +0.5 pp")
    ax2.set_yscale("symlog", linthresh=1.0)
    for ax in (ax1, ax2):
        ax.axvline(chosen, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(
            f"context boost per token (0 = no context; chosen {chosen:g})"
            if knob == "boost"
            else f"{knob} (leftmost point = no context; chosen {chosen:g})"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_ylabel("name recall (%)")
    ax1.set_title(f"Context-name recall ({kind})", fontsize=10)
    ax2.set_ylabel("WER change vs no context (percentage points)")
    ax2.set_title(f"WER on utterances without context names ({kind})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def examples(items: Sequence[Item], base: dict, biased: dict, n: int = 8) -> list[dict[str, str]]:
    """Name utterances whose final transcript changed with biasing (first ``n``, by id)."""
    out = []
    for it in items:
        if it.set in NAME_SETS and base[it.id][FINAL] != biased[it.id][FINAL]:
            out.append(
                {
                    "id": it.id,
                    "set": it.set,
                    "names": " ".join(it.targets),
                    "ref": it.text,
                    "without": base[it.id][FINAL],
                    "with": biased[it.id][FINAL],
                    "with_one_best": biased[it.id][ONE_BEST],
                }
            )
    return out[:n]


def _train_count_note(counts: dict[str, int] | None) -> str:
    if not counts:
        return "Training-text counts of the long-tail names: not available (no train_text.txt)."
    v = list(counts.values())
    return (
        f"The {len(v)} long-tail names occur in the training text {min(v)}–{max(v)} times each "
        f"(median {statistics.median(v):g}; {sum(x == 0 for x in v)} never occur, "
        f"{sum(x <= 2 for x in v)} at most twice); the held-out names never do."
    )


def build_page(
    args: argparse.Namespace,
    command: str,
    runs: dict[str, dict[str, Any]],
    chosen: float,
    reason: str,
    cmp: dict[str, dict[str, Any]],
    verdicts: dict[str, dict[str, Any]],
    set_sizes: dict[str, dict[str, int]],
    missing: list[str],
    counts: dict[str, int] | None,
    mismatch: dict[str, Any],
    exs: list[dict[str, str]],
    wall: dict[str, float],
    any_ok: list[str],
    biaser: dict[str, Any] | None = None,
) -> ResultsPage:
    K = args.knob
    page = ResultsPage(
        name=args.name,
        title=(
            "Contextual biasing: context-name recall and WER with and without neural biasing "
            "(TCPGen) plus shallow fusion"
            if args.neural
            else "Contextual biasing: context-name recall and WER with and without shallow fusion"
        ),
        command=command,
    )
    page.machine["onnxruntime"] = pkg_version("onnxruntime")
    page.add(
        f"System: the streaming device runtime (`edgeasr.runtime.Recognizer`, onnx "
        f"{args.variant}, exported from `{args.model}` into a temporary directory; beam "
        f"{args.beam}, {args.threads} thread(s)), fed {args.chunk_ms} ms pieces. The end-pointers "
        "are set never to fire before `input_finished()` (speculative/final 600 s, max utterance "
        "10 000 s, no classifier), so every utterance yields one `final_end`, whose text is the "
        "result scored here. *Without* = `create_stream()`; *with* = `create_stream(context="
        "contact_list)`, i.e. "
        + (
            "the model's trained neural biasing module (a tree-constrained pointer generator, "
            "`edgeasr.model.biaser`, trained by `edgeasr train-biaser` on made-up names only: no "
            "long-tail or held-out name was in its training material) with the gate offset "
            "shown added to its gate logit (`Recognizer(gate_offset=...)`; negative = fewer "
            f"names inserted and recalled), plus shallow fusion at boost {args.neural_boost:g}"
            f"{' (off)' if not args.neural_boost else ''}."
            if args.neural
            else "shallow fusion with the per-token boost shown (the neural biasing module, if "
            "the model has one, is off: `Recognizer(neural_biasing=False)`)."
        )
        + second_pass_note(args.model, args.one_pass)
    )
    if args.neural and biaser and "train_utts" in biaser.get("info", {}):
        info, cfg = biaser["info"], biaser["info"].get("config", {})
        page.add(
            "## The module\n\n"
            f"Trained into `{args.model}` by `edgeasr train-biaser --corpus {args.corpus} "
            f"--model {args.model} --names {cfg.get('names')} --synth-utts "
            f"{cfg.get('synth_utts')} --plain-utts {cfg.get('plain_utts')} --epochs "
            f"{cfg.get('epochs')} --seed {cfg.get('seed')}` (module settings "
            f"`{json.dumps(biaser['config'])}`), with the model frozen: "
            f"{info['train_utts']} utterances rendered by *training* voices, "
            f"{info['train_utts_with_name']} with a made-up surname in a 50–150-name list, the "
            "others ordinary requests with distractor-only lists; "
            f"{info['total_s'] / 60:.1f} min on {info['threads']} CPU threads. RNN-T loss per "
            f"token on {info['held_utts']} held-back made-up-name utterances: "
            f"{info['held_loss_per_token_unbiased']:.3f} for the model alone, "
            f"{info['held_loss_per_token_biased']:.3f} with the module."
        )
    page.add(
        "## Eval sets\n\n"
        f"- **{LT_CORPUS}**: `{'`, `'.join(args.eval_splits)}` utterances whose reference "
        "contains a long-tail name (`RARE_NAMES`, seen in training only a few times).\n"
        f"- **{LT_SYNTH}** / **{HO_SYNTH}**: {args.n_synth} utterances each from "
        "`generate_utterances(N, seed, names=RARE_NAMES / HELD_OUT_NAMES)` (seed "
        f"{args.seed}), synthesised with the corpus recipe by voices of the corpus' `test` pool "
        "(never heard in training); long-tail texts found verbatim in the training text are "
        "skipped. Held-out names (`HELD_OUT_NAMES`) never occur in training.\n"
        f"- **{NO_NAME}**: the other `{'`, `'.join(args.eval_splits)}` utterances; none contains "
        "a name of its contact list, so any context name in the output is an over-trigger.\n"
        f"- **{ALL_NAMES}**: the three name sets pooled.\n\n"
        + _train_count_note(counts)
        + "\n\n"
        + markdown_table(
            ["set", "test utts", "dev utts (tuning)"],
            [
                [s, set_sizes["test"].get(s, 0), set_sizes["dev"].get(s, 0)]
                for s in (*NAME_SETS, NO_NAME)
            ],
        )
        + (f"\n\nCorpus splits not found (skipped): {', '.join(missing)}." if missing else "")
    )
    page.add(
        "## Contact lists and metrics\n\n"
        f"Every utterance gets its own contact list of {args.context_size} single-word names: "
        "the long-tail / held-out names it contains plus distractors drawn deterministically "
        "(seeded by the utterance id) from the held-out names, the long-tail names and the common "
        "first names (`FIRST_NAMES`), leaving out any name that occurs in the reference; shuffled. "
        f"No-name utterances get {args.context_size} distractors. The same list is used to score "
        "both systems.\n\n"
        "- *Name recall*: of the context-name occurrences in the references, the fraction that "
        "the hypothesis also contains as the same word sequence (per name, min of the reference "
        "and hypothesis counts; position is not checked). *Name error* = 1 − recall; *name err "
        "reduction* = 1 − error with / error without.\n"
        "- *False names*: context-name occurrences in the hypothesis beyond the reference's count "
        "(on no-name utterances: every context name output).\n"
        "- *WER*: corpus-level (errors / reference words) over the set's utterances.\n\n"
        f"{K.capitalize()}: chosen on the `{TUNE_SPLIT}` counterpart of these sets (`{TUNE_SPLIT}` "
        f"split, `{TUNE_SPLIT}` voices, other synthesised sentences; {args.n_dev_synth} per "
        f"synthesised set) among {', '.join(f'{b:g}' for b in args.sweep)}: {reason}. "
        f"**Chosen {K}: {chosen:g}.**"
    )
    lines = []
    for key, v in verdicts.items():
        if key.startswith("name_errors_halved"):
            what = key[len("name_errors_halved[") : -1]
            lines.append(
                f"- {'PASS' if v['pass'] else 'FAIL'}: name errors at least halved on {what} "
                f"(reduction {pct(v['value'], 1)})"
            )
        else:
            lines.append(
                f"- {'PASS' if v['pass'] else 'FAIL'}: no-name WER rises by at most 0.5 percentage "
                f"points (change {_signed_pp(v['value'])})"
            )
    met = bar_met(verdicts)
    page.add(
        f"## Bar (test sets, {K} {chosen:g}): {'MET' if met else 'NOT MET'}\n\n"
        "Bar: biasing at least halves the error on context names while WER on utterances "
        "without them rises by at most 0.5 absolute, read as 0.5 percentage points of WER. "
        f"The headline is the pooled row ({ALL_NAMES}); the per-set rows are shown too.\n\n"
        + "\n".join(lines)
        + "\n\nLooking at the test sweep (not a fair choice, information only): "
        + (
            f"the pooled bar would hold at {K}(s) {', '.join(any_ok)}."
            if any_ok
            else f"no swept {K} meets both halves of the pooled bar on test."
        )
    )
    page.add(f"## Results on test at {K} {chosen:g}\n\n" + results_table(cmp[FINAL]))
    page.add(
        f"## {K.capitalize()} sweep on dev (used to choose the {K})\n\n"
        + sweep_table(runs["dev"]["baseline"][FINAL], _kind(runs["dev"]["sweep"], FINAL), chosen, K)
    )
    page.add(
        f"## {K.capitalize()} sweep on test (for information only; not used to choose)\n\n"
        + sweep_table(
            runs["test"]["baseline"][FINAL], _kind(runs["test"]["sweep"], FINAL), chosen, K
        )
    )
    page.add(f"![name recall and no-name WER against the {K}]({args.name}.png)")
    if runs["test"].get("oracle"):
        page.add(
            "## Diagnostic: contact list = only the true names (test)\n\n"
            "The same test name utterances, biased towards only the name(s) they contain "
            "instead of a list with distractors: an upper bound on what shallow fusion gets "
            "from this acoustic model, and, against the sweep above, the cost of the "
            f"{args.context_size - 1} distractors.\n\n"
            + oracle_table(runs["test"]["baseline"], runs["test"]["oracle"], K)
        )
    page.add(
        "## final_end vs the biased 1-best\n\n"
        "The stream ranks its beam by log-probability plus context bonus (its `partial` events "
        "show that 1-best), but the `final_end` text is the first path of the N-best lattice, "
        "which `build_lattice` orders by log-probability alone, so the context bonus only "
        "decides which hypotheses survive in the beam, not which one is reported. "
        f"With context ({K} {chosen:g}), final_end differed from the last partial on "
        f"{mismatch['with_context']} of {mismatch['utts']} test utterances (without context: "
        f"{mismatch['without_context']}). The same test sets scored on the biased 1-best "
        "(last partial), for comparison:\n\n"
        + results_table(cmp[ONE_BEST])
        + f"\n\n{K.capitalize()} sweep on test, biased 1-best:\n\n"
        + sweep_table(
            runs["test"]["baseline"][ONE_BEST], _kind(runs["test"]["sweep"], ONE_BEST), chosen, K
        )
    )
    if exs:
        page.add(
            "## Examples (name utterances whose final_end changed)\n\n"
            + markdown_table(
                ["set", "names", "reference", "without", "with", "with (1-best)"],
                [
                    [e["set"], e["names"], e["ref"], e["without"], e["with"], e["with_one_best"]]
                    for e in exs
                ],
                align="llllll",
            )
        )
    rtf = runs["test"]["rtf"]
    page.add(
        "Real-time factor on test (decoding only, all sets): "
        + ", ".join(
            f"{'no context' if k == 'none' else K + ' ' + k} {num(v)}" for k, v in rtf.items()
        )
        + ". Wall time (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in wall.items())
    )
    page.data = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "biaser": biaser if args.neural else None,
        "endpoint": "NEVER (edgeasr.runtime.endpoint): one final_end per utterance",
        "bar": {
            "min_name_error_reduction": MIN_ERR_REDUCTION,
            "max_no_name_wer_rise_abs": MAX_WER_RISE,
            "verdicts": verdicts,
            "met": met,
        },
        "chosen_boost": chosen,
        "test_boosts_meeting_pooled_bar": any_ok,
        "choice_rule": reason,
        "set_sizes": set_sizes,
        "missing_splits": missing,
        "rare_name_train_counts": counts,
        "test_at_chosen_boost": cmp,
        "runs": runs,
        "final_end_vs_one_best": mismatch,
        "examples": exs,
        "wall_s": {k: round(v, 1) for k, v in wall.items()},
    }
    return page


def _kind(sweep: dict[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    return {b: v[kind] for b, v in sweep.items()}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = benchmark_parser(__doc__, "biasing", package_beam=True)
    p.add_argument("--variant", choices=("fp32", "int8"), default="fp32", help="onnx variant")
    p.add_argument("--chunk-ms", type=int, default=320, help="size of the pieces fed to a stream")
    p.add_argument(
        "--eval-splits",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(EVAL_SPLITS),
        help="corpus splits for long-tail (corpus) and no-name",
    )
    p.add_argument("--n-synth", type=int, default=150, help="utterances per synthesised test set")
    p.add_argument("--n-dev-synth", type=int, default=150, help="per synthesised dev set")
    p.add_argument("--seed", type=int, default=0, help="text and contact-list seed")
    p.add_argument("--context-size", type=int, default=100, help="names per contact list")
    p.add_argument(
        "--boosts",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
        help="context boosts (per token) to sweep",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="synthesised audio cache (default <corpus>/biasing)",
    )
    p.add_argument(
        "--neural",
        action="store_true",
        help="bias with the model's neural biasing module (TCPGen), sweeping --gate-offsets "
        "instead of the boost; default page biasing-neural",
    )
    p.add_argument(
        "--gate-offsets",
        type=float,
        nargs="+",
        default=[-2.0, -1.0, 0.0],
        help="with --neural: offsets of the module's gate logit to sweep",
    )
    p.add_argument(
        "--neural-boost",
        type=float,
        default=0.0,
        help="with --neural: shallow-fusion boost used together with the module (0: none)",
    )
    args = p.parse_args(argv)
    if any(b <= 0 for b in args.boosts):
        p.error("--boosts must be positive")
    if args.neural_boost < 0:
        p.error("--neural-boost must be >= 0")
    args.knob = "gate offset" if args.neural else "boost"
    args.sweep = args.gate_offsets if args.neural else args.boosts
    if args.neural and args.name == "biasing":
        args.name = "biasing-neural"
    if args.context_size < 1:
        p.error("--context-size must be at least 1")
    return args


def _resolve(path: Path) -> Path:
    """Relative paths are taken from the current directory, else from the repo root."""
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    limit_threads(args.threads)  # before numpy/torch load (all heavy imports are below)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    set_torch_threads(args.threads)

    from edgeasr.export.onnx import export_model_dir
    from edgeasr.runtime import Recognizer, load_runtime_package
    from edgeasr.runtime.endpoint import NEVER

    t_start = time.perf_counter()
    wall: dict[str, float] = {}
    model_dir = _resolve(args.model)
    if not (model_dir / "manifest.json").is_file():
        log.error("edgeasr model package not found at %s (pass --model DIR)", model_dir)
        return 2
    args.beam = package_beam(model_dir, args.beam)
    corpus = _resolve(args.corpus)
    cache = args.cache or corpus / "biasing"

    t0 = time.perf_counter()
    sides: dict[str, list[Item]] = {}
    missing: list[str] = []
    for tag, splits, voice_split, n in (
        ("dev", [TUNE_SPLIT], TUNE_SPLIT, args.n_dev_synth),
        ("test", args.eval_splits, "test", args.n_synth),
    ):
        items, miss = build_items(
            corpus, cache, splits, voice_split, n, args.seed, args.context_size, tag
        )
        sides[tag] = items
        missing += miss
    wall["data"] = time.perf_counter() - t0
    if not sides["test"] or not any(it.set in NAME_SETS for it in sides["test"]):
        log.error("no test utterances with context names (corpus %s); nothing to do", corpus)
        return 2
    if not sides["dev"]:
        log.warning("no dev material: the boost is chosen on nothing (first of --boosts wins)")
    set_sizes = {tag: dict(Counter(it.set for it in items)) for tag, items in sides.items()}

    endpoint = NEVER
    chunk = max(1, args.chunk_ms * 16)
    runs: dict[str, dict[str, Any]] = {}
    hyps: dict[str, dict[str, dict[str, dict[str, str]]]] = {"dev": {}, "test": {}}
    with tempfile.TemporaryDirectory(prefix="edgeasr-biasing-") as tmp:
        t0 = time.perf_counter()
        onnx_dir = export_model_dir(model_dir, Path(tmp) / "onnx", int8=args.variant == "int8")
        package = load_runtime_package(onnx_dir)
        wall["export"] = time.perf_counter() - t0

        def recognizer(value: float) -> Recognizer:
            """The system at one swept value: a boost, or with --neural a gate offset."""
            return Recognizer(
                package,
                args.variant,
                beam=args.beam,
                num_threads=args.threads,
                endpoint=endpoint,
                context_boost=args.neural_boost if args.neural else value,
                neural_biasing=args.neural,
                gate_offset=value if args.neural else 0.0,
                **decoding_overrides(args.one_pass),
            )

        if args.neural and not recognizer(0.0).neural_biasing:
            log.error(
                "%s has no neural biasing module (train one: edgeasr train-biaser)", model_dir
            )
            return 2
        t0 = time.perf_counter()
        base_rec = recognizer(1.0)  # the value is unused without context
        for tag, items in sides.items():
            hyps[tag]["none"], secs = decode_all(base_rec, items, False, chunk, f"{tag} no context")
            audio = sum(it.duration for it in items)
            runs[tag] = {
                "baseline": {
                    k: summarize_sets(items, hyps[tag]["none"], k) for k in (FINAL, ONE_BEST)
                },
                "sweep": {},
                "rtf": {"none": secs / audio if audio else None},
            }
            for b in args.sweep:
                rec = recognizer(b)
                key = f"{b:g}"
                desc = f"{tag} {args.knob} {key}"
                hyps[tag][key], secs = decode_all(rec, items, True, chunk, desc)
                runs[tag]["sweep"][key] = {
                    k: summarize_sets(items, hyps[tag][key], k) for k in (FINAL, ONE_BEST)
                }
                runs[tag]["rtf"][key] = secs / audio if audio else None
                if tag == "test":  # diagnostic: the contact list holds only the true names
                    oracle = [
                        replace(it, context=it.targets) for it in items if it.set in NAME_SETS
                    ]
                    oh, _ = decode_all(rec, oracle, True, chunk, f"oracle {args.knob} {key}")
                    runs[tag].setdefault("oracle", {})[key] = {
                        k: summarize_sets(oracle, oh, k) for k in (FINAL, ONE_BEST)
                    }
                s = runs[tag]["sweep"][key][FINAL]
                log.info(
                    "%s %s %s: pooled name recall %s, no-name WER %s",
                    tag,
                    args.knob,
                    key,
                    pct(s.get(ALL_NAMES, {}).get("recall")),
                    pct(s.get(NO_NAME, {}).get("wer"), 2),
                )
        wall["decode"] = time.perf_counter() - t0

    dev = runs["dev"]
    chosen, reason = choose_boost(
        dev["baseline"][FINAL], _kind(dev["sweep"], FINAL), knob=args.knob
    )
    key = f"{chosen:g}"
    test = runs["test"]
    cmp = {k: compare(test["baseline"][k], test["sweep"][key][k]) for k in (FINAL, ONE_BEST)}
    verdicts = bar_verdicts(cmp[FINAL])
    any_ok = [
        b
        for b in sorted(test["sweep"], key=float)
        if bar_met(bar_verdicts(compare(test["baseline"][FINAL], test["sweep"][b][FINAL])))
    ]
    th = hyps["test"]
    mismatch = {
        "utts": len(sides["test"]),
        "with_context": sum(th[key][i.id][FINAL] != th[key][i.id][ONE_BEST] for i in sides["test"]),
        "without_context": sum(
            th["none"][i.id][FINAL] != th["none"][i.id][ONE_BEST] for i in sides["test"]
        ),
        "boost": chosen,
    }
    exs = examples(sides["test"], th["none"], th[key])
    wall["total"] = time.perf_counter() - t_start

    command = command_line() if argv is None else command_line([__file__, *argv])
    page = build_page(
        args,
        command,
        runs,
        chosen,
        reason,
        cmp,
        verdicts,
        set_sizes,
        missing,
        rare_train_counts(corpus),
        mismatch,
        exs,
        wall,
        any_ok,
        json.loads((model_dir / "manifest.json").read_text()).get("biaser"),
    )
    md, js = page.write(args.out_dir)
    png = args.out_dir / f"{args.name}.png"
    plot({"dev": runs["dev"], "test": runs["test"]}, chosen, png, knob=args.knob)
    print(results_table(cmp[FINAL]))
    print()
    for k, v in verdicts.items():
        print(f"{'PASS' if v['pass'] else 'FAIL'} {k}: {v['value']}")
    print(f"bar {'MET' if bar_met(verdicts) else 'NOT MET'} (pooled name sets + no-name WER)")
    print(f"\nchosen {args.knob} {chosen:g} ({reason})\nwrote {md}, {js}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
