"""Extra synthesised sets beside a corpus: eval and training material made with its recipe.

The biasing benchmark needs utterances with names the corpus never contains, and the neural
biasing module trains on utterances with made-up names. Both are rendered exactly like the
corpus (its ``SynthConfig`` from ``corpus.json``, the voices of one of its splits), cached next
to it so reruns only load audio, and deterministic for a seed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def corpus_config(corpus: Path) -> dict[str, Any]:
    """The corpus' ``corpus.json`` (empty for corpora without one)."""
    path = corpus / "corpus.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def synth_config(corpus_info: dict[str, Any]) -> Any:
    """The corpus' SynthConfig (so synthesised sets follow its recipe), defaults where absent."""
    from dataclasses import fields

    from edgeasr.corpus.synth import SynthConfig

    raw = corpus_info.get("config", {})
    kw: dict[str, Any] = {}
    for f in fields(SynthConfig):
        if f.name in raw:
            v = raw[f.name]
            kw[f.name] = tuple(v) if isinstance(v, list) else v
    if "seed" not in kw and "seed" in corpus_info:
        kw["seed"] = corpus_info["seed"]
    return SynthConfig(**kw)


def split_voices(corpus_info: dict[str, Any], split: str, holdout_engine: str) -> list[Any]:
    """Voices of a corpus split: the corpus' recorded pool, else today's voice assignment."""
    from edgeasr.corpus.synth import assign_voices
    from edgeasr.corpus.tts import Voice, list_voices

    pool = corpus_info.get("voice_pool", {}).get(split)
    if pool:
        return [Voice.from_id(v) for v in pool]
    return assign_voices(list_voices(), holdout_engine)[split]


def synth_texts(
    n: int, seed: int, names: Sequence[str], stream: str, exclude: set[str]
) -> list[Any]:
    """``n`` utterances each containing one of ``names``, skipping texts in ``exclude``."""
    from edgeasr.corpus.text import generate_utterances

    out: list[Any] = []
    m = n
    while len(out) < n:
        utts = generate_utterances(m, seed, names=names, stream=stream)  # prefix-stable
        out = [u for u in utts if u.text not in exclude][:n]
        if m > 4 * n + 100:
            break
        m *= 2
    return out


def synthesize_set(
    cache: Path,
    cfg: Any,
    split: str,
    texts: Sequence[Any],
    voices: Sequence[Any],
    jobs: int = 2,
) -> list[dict[str, Any]]:
    """Render ``texts`` with the corpus recipe (``plan_job``/``render``), cached under ``cache``
    (see :func:`render_jobs`)."""
    from edgeasr.corpus.synth import plan_job

    planned = [plan_job(cfg, split, i, utt, voices) for i, utt in enumerate(texts)]
    return render_jobs(cache, split, planned, jobs)


def rerender_split(
    corpus: Path,
    split: str,
    cache: Path,
    keep: Callable[[Any], bool],
    jobs: int = 2,
    **changes: Any,
) -> list[dict[str, Any]]:
    """The corpus' own ``split`` utterances for which ``keep(job)`` holds, rendered again with
    the recipe's settings ``changes`` (e.g. ``pause_prosody="continuing"``) into ``cache``.

    Every other draw (text, voice, rate, pitch, padding, noise) is the corpus' own, so each
    re-rendered utterance pairs with its original and a comparison measures only the change.
    Refuses a corpus that this code and this machine's voices cannot re-plan exactly (every
    utterance's recipe fingerprint is checked against the corpus' work records).
    """
    from dataclasses import replace

    from edgeasr.corpus.synth import SPLITS, assign_voices, eval_job, train_job
    from edgeasr.corpus.tts import list_voices

    info = corpus_config(corpus)
    cfg = synth_config(info)
    # the voice assignment in the order synthesis drew from (corpus.json's pool is sorted)
    voices = assign_voices(list_voices(), cfg.holdout_engine)[split]
    n = int(info.get("utterances", {}).get(split, 0))
    if not n:
        raise ValueError(f"{corpus}: corpus.json lists no {split} utterances")
    if split == "train":
        # Train sentences were drawn avoiding every eval sentence, so re-planning needs those
        # (the texts the eval splits were rendered with); train indices are those synthesised.
        exclude = {r["text"] for s in SPLITS if s != split for r in _work_records(corpus, s)}
        indices: Sequence[int] = sorted(r["index"] for r in _work_records(corpus, split))

        def plan(c: Any, i: int) -> Any:
            return train_job(c, i, voices, exclude)
    else:
        indices = range(n)

        def plan(c: Any, i: int) -> Any:
            return eval_job(c, split, i, voices)

    planned = [plan(cfg, i) for i in indices]
    _check_replanned(corpus, split, planned)
    new_cfg = replace(cfg, **changes)
    chosen = [plan(new_cfg, job.index) for job in planned if keep(job)]
    return render_jobs(cache, split, chosen, jobs)


def _work_records(corpus: Path, split: str) -> list[dict[str, Any]]:
    """The synthesis work records of ``split`` (``work/{split}_done.jsonl``) without failures."""
    index = corpus / "work" / f"{split}_done.jsonl"
    if not index.is_file():
        raise ValueError(f"{corpus}: no {index.name} to re-plan {split} from")
    records = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    return [r for r in records if "error" not in r]


def _check_replanned(corpus: Path, split: str, planned: Sequence[Any]) -> None:
    """The corpus' work records carry each utterance's recipe fingerprint; the re-planned jobs
    must reproduce them, else the corpus was made by other code or settings."""
    fingerprints = {r["id"]: r.get("fingerprint") for r in _work_records(corpus, split)}
    bad = [j.id for j in planned if j.id in fingerprints and fingerprints[j.id] != j.fingerprint()]
    if bad or not any(j.id in fingerprints for j in planned):
        raise ValueError(
            f"{corpus}: {split} cannot be re-planned by this code ({len(bad)} recipes differ, "
            f"e.g. {bad[:2]})"
        )


def render_jobs(
    cache: Path, split: str, planned: Sequence[Any], jobs: int = 2
) -> list[dict[str, Any]]:
    """Render planned ``UttJob``s into ``cache``.

    A record is reused when its recipe fingerprint matches and its audio exists; the rest are
    rendered on ``jobs`` processes. The index ``cache/<split>.jsonl`` is rewritten with exactly
    the requested utterances, in order (an utterance whose synthesis failed is logged and left
    out).
    """
    import multiprocessing

    from tqdm import tqdm

    from edgeasr.corpus.synth import _render_star

    audio = cache / "audio"
    (audio / split).mkdir(parents=True, exist_ok=True)  # render() writes there
    index = cache / f"{split}.jsonl"
    done: dict[str, dict[str, Any]] = {}
    if index.is_file():
        for line in index.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[rec["id"]] = rec
    todo = [
        (job, audio)
        for job in planned
        if not (
            (rec := done.get(job.id))
            and rec.get("fingerprint") == job.fingerprint()
            and Path(rec["path"]).is_file()
        )
    ]
    if todo:
        bar = tqdm(total=len(todo), desc=f"synth {split}", unit="utt", disable=None)
        if jobs > 1 and len(todo) > 1:
            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                for rec in pool.imap_unordered(_render_star, todo, chunksize=4):
                    done[rec["id"]] = rec
                    bar.update()
        else:
            for args in todo:
                rec = _render_star(args)
                done[rec["id"]] = rec
                bar.update()
        bar.close()
    records: list[dict[str, Any]] = []
    for job in planned:
        rec = done[job.id]
        if "error" in rec:
            log.error("%s: synthesis failed, skipped: %s", job.id, rec["error"])
            continue
        records.append(rec)
    tmp = index.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, index)
    log.info("%s: %d utterances (%d synthesised now, rest cached)", split, len(records), len(todo))
    return records


def synthesize_beside(
    corpus: Path, voice_split: str, cache: Path, split: str, texts: Sequence[Any], jobs: int = 2
) -> list[dict[str, Any]]:
    """Render ``texts`` the way ``corpus`` was made (its recipe, the voices of its
    ``voice_split``) into ``cache``; see :func:`synthesize_set`."""
    info = corpus_config(corpus)
    cfg = synth_config(info)
    voices = split_voices(info, voice_split, cfg.holdout_engine)
    return synthesize_set(cache, cfg, split, texts, voices, jobs)


def load_flac(path: str) -> np.ndarray:
    """A rendered record's audio as 16 kHz mono float32."""
    import soundfile as sf

    from edgeasr.audio import SAMPLE_RATE, resample_audio

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return resample_audio(x[:, 0], sr, SAMPLE_RATE)
