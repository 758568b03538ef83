"""The model-update scenario: five updates v1…v5, each bringing new names, new command types and
new voices, synthesised as small corpora next to the base corpus.

Why this shape: a deployed model meets material it was never trained on — long-tail names
("how did ledecky do last night"), new kinds of requests ("resume my audiobook") and new users'
voices — and an over-the-air update must teach it without forgetting what it knew. Each update
``k`` therefore gets

- **names**: a disjoint slice of the held-out names (:data:`~edgeasr.corpus.text.HELD_OUT_NAMES`,
  which the base corpus never contains), used in the update's own templates and in the regular
  person/place templates;
- **command types**: templates that are not in :data:`~edgeasr.corpus.text.TEMPLATES`, many with
  words the base corpus never has;
- **voices**: espeak-ng variants of the *dev* voice pool, which no base model trained on (the
  test pool stays untouched, so the original test set remains a clean measure of forgetting).

Each update corpus ``v<k>/`` has ``train`` (new material, a replay sample of the base corpus's
train split and of every earlier update's new material — the server that trains an update has
all the old data, and what earlier updates taught must not be forgotten either), ``dev`` (new
material and as much of the base dev set, for checkpoint selection) and ``test`` (new material,
sentences not in train or dev; half the update's new voices, half the base test voice pool).

Every utterance is drawn from an RNG seeded by (seed, stream, index), as in the base corpus, and
synthesis resumes where an interrupted run stopped.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from edgeasr.corpus.synth import (
    SplitResult,
    SynthConfig,
    _collect,
    _Runner,
    assign_voices,
    plan_job,
    write_manifests,
)
from edgeasr.corpus.text import (
    FILLERS,
    FIRST_NAMES,
    HELD_OUT_PLACES,
    Utterance,
    held_out_generator,
    make_utterance,
    utterance_rng,
)
from edgeasr.corpus.tts import Voice, list_voices

log = logging.getLogger(__name__)

FORMAT = "edgeasr-updates/1"


@dataclass(frozen=True)
class UpdateSpec:
    """What update ``index`` teaches. ``name_templates`` use ``{new}`` for one of ``names``;
    ``commands`` are new request types without a name."""

    index: int
    theme: str
    names: tuple[str, ...]
    name_templates: tuple[str, ...]
    commands: tuple[str, ...]
    voice_variants: tuple[str, ...]


UPDATES: tuple[UpdateSpec, ...] = (
    UpdateSpec(
        1,
        "sports",
        ("ledecky", "kalisz", "antetokounmpo", "wembanyama", "haaland"),
        (
            "how did {new} do last night",
            "show me {new}'s stats",
            "when does {new} play next",
            "is {new} playing tonight",
            "how many points did {new} score",
            "follow {new} | on the sports app",
        ),
        (
            "show me the medal table {day}",
            "who won the marathon in {city}",
            "when is the next formula one race in {city}",
            "what's the score of the swimming final {day}",
            "set a reminder for kickoff at {time}",
        ),
        ("f5", "m5"),
    ),
    UpdateSpec(
        2,
        "contacts",
        ("przybylski", "nowakowska", "brzezinski", "czajkowski", "kowalczyk"),
        (
            "share my location with {new}",
            "start a video chat with {new}",
            "block calls from {new}",
            "add {new} to my favourites",
            "forward this email | to {new}",
        ),
        (
            "turn on do not disturb for {duration}",
            "read my voicemail from {contact}",
            "mute the group chat for {duration}",
            "turn on battery saver at {percent} percent",
            "turn on airplane mode at {time}",
        ),
        ("klatt2", "Alicia"),
    ),
    UpdateSpec(
        3,
        "travel",
        HELD_OUT_PLACES,
        (
            "book a hotel in {new}",
            "what's the exchange rate in {new}",
            "find trains to {new} {day}",
            "what language do they speak in {new}",
            "show me photos of | {new}",
        ),
        (
            "check in for my flight to {city}",
            "what gate does my flight to {city} leave from",
            "is my flight to {city} delayed",
            "convert {bignum} euros to dollars",
            "find a taxi | to the airport {day}",
        ),
        ("robert", "iven2"),
    ),
    UpdateSpec(
        4,
        "media",
        ("thorvaldsen", "sigurdsson", "oyelowo", "achterberg", "vandersloot"),
        (
            "play the latest podcast by {new}",
            "read me the new book by {new}",
            "find movies with {new}",
            "play the interview with | {new}",
            "who is {new}",
        ),
        (
            "resume my audiobook in the {room}",
            "skip ahead {duration}",
            "play the next episode | in the {room}",
            "subscribe to {artist}'s podcast",
            "read me chapter {small}",
        ),
        ("Gene2",),
    ),
    UpdateSpec(
        5,
        "football and kitchen",
        (
            "grzegorz",
            "zbigniew",
            "szoboszlai",
            "kvaratskhelia",
            "odegaard",
            "dembele",
            "jokic",
            "doncic",
            "okafor",
            "adebayo",
        ),
        (
            "did {new} score {day}",
            "show me {new}'s goals",
            "is {new} injured",
            "when does {new} play next",
            "message {new} | about the match",
        ),
        (
            "preheat the oven to {temp} degrees",
            "start the robot mower {day}",
            "set the bread maker for {duration}",
            "set the slow cooker | to low for {duration}",
            "turn on the extractor fan in the {room}",
        ),
        ("linda",),
    ),
)

NAME_SHARE = 0.6  # of an update's utterances contain one of its names


@dataclass(frozen=True)
class UpdateSizes:
    train: int = 400  # new-material utterances
    dev: int = 60
    test: int = 120
    replay: int = 300  # replayed from the base corpus's train split
    replay_previous: int = 100  # replayed from each earlier update's new material


def update_utterance(spec: UpdateSpec, rng: random.Random) -> Utterance:
    """One utterance of the update's new material: with probability :data:`NAME_SHARE` one of
    its names (half in its own templates, half in the regular person/place templates), else
    one of its new command types."""
    if rng.random() < NAME_SHARE:
        if rng.random() < 0.5:
            return held_out_generator(spec.names)(rng)

        def new(r: random.Random) -> str:
            name = r.choice(spec.names)
            if name in HELD_OUT_PLACES or r.random() >= 0.3:
                return name
            return f"{r.choice(FIRST_NAMES)} {name}"

        return make_utterance(rng.choice(spec.name_templates), rng, {"new": new}, -1)
    return make_utterance(rng.choice(spec.commands), rng, None, -1)


def _voices(spec: UpdateSpec, pools: dict[str, list[Voice]]) -> dict[str, list[Voice]]:
    """Voices of the update's train/dev/test: its new voices, mixed with train (for training)
    or test (for evaluation) voices of the base corpus."""
    new = [v for v in pools["dev"] if v.param("variant") in spec.voice_variants]
    if not new:
        raise ValueError(f"update {spec.index}: no installed voices for {spec.voice_variants}")
    return {"new": new, "train": pools["train"], "test": pools["test"]}


def _texts(spec: UpdateSpec, seed: int, split: str, n: int, exclude: set[str]) -> list[Utterance]:
    out = []
    for i in range(n):
        rng = utterance_rng(seed, f"update{spec.index}-{split}", i)
        utt = update_utterance(spec, rng)
        for _ in range(100):  # resample (same RNG) while it collides with an eval sentence
            if utt.text not in exclude:
                break
            utt = update_utterance(spec, rng)
        out.append(utt)
    return out


def synthesize_update(
    spec: UpdateSpec,
    out_dir: Path,
    base_corpus: Path,
    seed: int,
    sizes: UpdateSizes,
    pools: dict[str, list[Voice]],
    jobs: int = 2,
) -> dict[str, Any]:
    """Build ``out_dir`` (``manifests/{train,dev,test}_cuts.jsonl.gz``) for one update."""
    from lhotse import CutSet

    from edgeasr.train.data import cuts_path

    t0 = time.monotonic()
    cfg = SynthConfig(seed=seed)
    voices = _voices(spec, pools)
    runner = _Runner(out_dir, jobs)
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        seen: set[str] = set()
        for split in ("test", "dev", "train"):
            n = getattr(sizes, split)
            utts = _texts(spec, seed, split, n, seen if split != "test" else set())
            if split != "train":
                seen |= {u.text for u in utts}
            jobs_ = []
            for i, utt in enumerate(utts):
                # alternate the update's new voices with base voices (train pool for training,
                # test pool for evaluation)
                base_pool = voices["test" if split == "test" else "train"]
                pool = voices["new"] if i % 2 == 0 else base_pool
                jobs_.append(
                    plan_job(cfg, f"u{spec.index}-{split}", i, utt, pool, degrade=split == "train")
                )
            res = _collect_split(runner, f"u{spec.index}-{split}", jobs_)
            results[split] = res
    finally:
        runner.close()
    manifests = out_dir / "manifests"
    for split, records in results.items():
        write_manifests(records, split, manifests)
    # replay: a seeded sample of the base train split, disjoint across updates
    base = list(CutSet.from_file(cuts_path(base_corpus, "train")))
    order = list(range(len(base)))
    random.Random(f"edgeasr:{seed}:replay").shuffle(order)
    start = (spec.index - 1) * sizes.replay
    replay = CutSet.from_cuts(base[i] for i in order[start : start + sizes.replay])
    # (manifests read eagerly: they are rewritten in place)
    train = CutSet.from_file(cuts_path(out_dir, "train")).to_eager() + replay
    for j in range(1, spec.index):
        # what earlier updates taught must not be forgotten either
        prev = [c for c in CutSet.from_file(cuts_path(out_dir.parent / f"v{j}", "train"))
                if c.id.startswith(f"u{j}-train-")]  # fmt: skip
        pick = random.Random(f"edgeasr:{seed}:replay{spec.index}:{j}").sample(
            range(len(prev)), min(sizes.replay_previous, len(prev))
        )
        train = train + CutSet.from_cuts(prev[i] for i in sorted(pick))
    train.to_file(cuts_path(out_dir, "train"))
    # dev selects checkpoints: half new material, half the base dev set, so that a checkpoint
    # that learnt the new material by forgetting the old does not win
    base_dev = list(CutSet.from_file(cuts_path(base_corpus, "dev")))
    base_pick = random.Random(f"edgeasr:{seed}:dev{spec.index}").sample(
        range(len(base_dev)), min(sizes.dev, len(base_dev))
    )
    dev = CutSet.from_file(cuts_path(out_dir, "dev")).to_eager() + CutSet.from_cuts(
        base_dev[i] for i in sorted(base_pick)
    )
    dev.to_file(cuts_path(out_dir, "dev"))
    summary = {
        "format": FORMAT,
        "update": spec.index,
        "theme": spec.theme,
        "names": list(spec.names),
        "voices_new": sorted(v.id for v in voices["new"]),
        "utterances": {s: len(r) for s, r in results.items()}
        | {
            "replay": len(replay),
            "replay_previous": len(train) - len(replay) - len(results["train"]),
            "dev_base": len(base_pick),
        },
        "config": {"seed": seed, "sizes": asdict(sizes)},
        "base_corpus": str(Path(base_corpus).resolve()),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    (out_dir / "update.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _collect_split(runner: _Runner, split: str, jobs: list) -> list[dict[str, Any]]:
    res = SplitResult()
    with tqdm(total=len(jobs), desc=split, unit="utt", disable=None) as bar:
        _collect(split, runner.run(split, jobs, bar), res)
    if res.failed:
        log.warning("%s: %d utterances failed and were dropped", split, res.failed)
    return sorted(res.records, key=lambda r: r["index"])


def synthesize_updates(
    out: Path,
    base_corpus: Path,
    seed: int = 1,
    sizes: UpdateSizes | None = None,
    jobs: int = 2,
    voices: list[Voice] | None = None,
) -> list[dict[str, Any]]:
    """All five update corpora under ``out/v1 … out/v5`` (existing complete ones are kept)."""
    from edgeasr.train.data import cuts_path

    for split in ("train", "dev"):
        if not cuts_path(base_corpus, split).is_file():
            raise FileNotFoundError(
                f"{base_corpus}: not a corpus (no {cuts_path(base_corpus, split).name}); the "
                "updates replay its train and dev splits, build it with `edgeasr corpus synth`"
            )
    sizes = sizes or UpdateSizes()
    pools = assign_voices(voices if voices is not None else list_voices())
    out = Path(out)
    config = {"seed": seed, "sizes": asdict(sizes)}
    summaries = []
    for spec in UPDATES:
        d = out / f"v{spec.index}"
        done = d / "update.json"
        if done.exists():
            summary = json.loads(done.read_text())
            if summary.get("format") == FORMAT and summary.get("config") == config:
                summaries.append(summary)
                continue
        log.info("update %d (%s): synthesising", spec.index, spec.theme)
        summaries.append(synthesize_update(spec, d, base_corpus, seed, sizes, pools, jobs))
    return summaries


def null_updates(updates: Path, out: Path, base_corpus: Path) -> list[dict[str, Any]]:
    """The control scenario: each update of ``updates`` with its new material (and the earlier
    updates' replayed material) swapped for as many other base-corpus training utterances.

    Why: an update can raise the original test's WER because the new material pulls the model
    away from the old, or because fine-tuning itself moves a converged model (fewer, noisier
    steps on a sample of its data). Training the same chain on this control, whose updates
    teach nothing new, measures the second alone: the noise floor under any forgetting bar.
    Dev and test splits are the update's own, so the two chains are scored alike. The swapped-in
    utterances are drawn (seeded by the update's index, from the base corpus's sorted ids) from
    those that neither this update's replay nor an earlier update used; a later update may
    replay some of them, as it may replay what any base training utterance taught.
    """
    import shutil

    from lhotse import CutSet

    from edgeasr.train.data import cuts_path

    if Path(out).resolve() == Path(updates).resolve():
        raise ValueError(f"{out}: the control would overwrite the update corpora it mirrors")
    base = CutSet.from_file(cuts_path(base_corpus, "train")).to_eager()
    ids = sorted(base.ids)
    used: set[str] = set()
    plans = []
    for spec in UPDATES:  # every draw first: a base corpus too small fails before any write
        src = Path(updates) / f"v{spec.index}"
        if not cuts_path(src, "train").is_file():
            raise FileNotFoundError(f"{src}: no update corpus (build it with `corpus updates`)")
        train = CutSet.from_file(cuts_path(src, "train")).to_eager()
        keep = [c for c in train if c.id in base]  # the update's replay of the base corpus
        used |= {c.id for c in keep}
        n = len(train) - len(keep)
        pool = [i for i in ids if i not in used]
        if n > len(pool):
            raise ValueError(
                f"{base_corpus}: {len(pool)} unused training utterances, update {spec.index} "
                f"needs {n}"
            )
        extra = random.Random(f"null{spec.index}").sample(pool, n)
        used |= set(extra)
        plans.append((spec.index, src, keep + [base[i] for i in extra], len(keep), n))
    summaries = []
    for index, src, cuts, kept, swapped in plans:
        dst = Path(out) / f"v{index}"
        (dst / "manifests").mkdir(parents=True, exist_ok=True)
        for split in ("dev", "test"):
            for f in sorted((src / "manifests").glob(f"{split}_*")):
                shutil.copy(f, dst / "manifests" / f.name)
        CutSet.from_cuts(cuts).to_file(cuts_path(dst, "train"))
        summary = {
            "format": FORMAT,
            "update": index,
            "control": "null: the update's new material swapped for base training utterances",
            "from": str(src.resolve()),
            "utterances": {"replay": kept, "base_instead_of_new": swapped},
        }
        (dst / "update.json").write_text(json.dumps(summary, indent=1) + "\n")
        summaries.append(summary)
    return summaries


def _check_disjoint() -> None:
    names = [n for spec in UPDATES for n in spec.names]
    if len(names) != len(set(names)):  # a programming error in the table above
        raise RuntimeError("an update reuses another update's names")
    slots = {"new", *FILLERS}
    for spec in UPDATES:
        for t in spec.name_templates + spec.commands:
            for slot in re.findall(r"\{(\w+)\}", t):
                if slot not in slots:
                    raise RuntimeError(f"update {spec.index} template {t!r}: unknown slot {slot}")


_check_disjoint()
