"""Real recorded speech for evaluation only: ``fsdd-test`` and ``speechocean762-test``.

The sets live outside the repository, under the shared data directory (``$EDGEASR_SHARED/data``,
or ``<repo root>/../shared/data`` when the variable is unset), because they are not ours to
redistribute inside the package. Each folder has a ``transcripts.tsv`` (``file``, ``text``,
``speaker``, and for speechocean762 ``age``). References go through the same
:func:`~edgeasr.corpus.text.normalize_text` as synthetic references and hypotheses, so WER never
counts a formatting difference (an apostrophe, a capital, a digit) as an error.

These sets measure how far synthetic training carries to people: never train or tune on them.
A missing shared directory is not an error here (a checkout without the data should still import
and test); the loaders log a warning and return nothing, and callers decide whether to fail.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeasr.audio import load_audio
from edgeasr.corpus.text import normalize_text

log = logging.getLogger(__name__)

SHARED_ENV = "EDGEASR_SHARED"
REAL_SETS: tuple[str, ...] = ("fsdd-test", "speechocean762-test")
_REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class EvalItem:
    """One real utterance: where its audio is and what was said (normalised words).

    ``meta`` keeps the remaining transcript columns (speaker age for speechocean762) as strings so
    a benchmark can break results down by them without this module knowing every column.
    """

    id: str
    path: Path
    text: str
    speaker: str
    set_name: str
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def load(self) -> np.ndarray:
        """Samples as float32 mono at 16 kHz (the 8 kHz digits are upsampled here, on purpose)."""
        return load_audio(self.path, resample=True)


def shared_dir() -> Path:
    """The shared directory: ``$EDGEASR_SHARED`` if set, else ``<repo root>/../shared``."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env).expanduser()
    return _REPO_ROOT.parent / "shared"


def real_data_dir() -> Path:
    """Folder holding one sub-folder per real evaluation set."""
    return shared_dir() / "data"


def normalize_reference(text: str) -> str:
    """Reference text as scored: lowercase ``[a-z']`` words, punctuation removed.

    The shipped transcripts are already lowercase but carry apostrophes ("it's", "bob's"), which
    our normaliser keeps inside words, matching what the tokenizer and pocketsphinx produce.
    """
    return normalize_text(text)


def load_real_set(name: str, data_dir: Path | None = None) -> list[EvalItem]:
    """Items of one real set, in transcript order; empty (with a warning) if the set is absent."""
    if name not in REAL_SETS:
        raise ValueError(f"unknown real eval set {name!r}; expected one of {REAL_SETS}")
    root = (data_dir or real_data_dir()) / name
    tsv = root / "transcripts.tsv"
    if not tsv.is_file():
        log.warning(
            "real eval set %s not found (%s missing); set %s to the shared dir to use it",
            name,
            tsv,
            SHARED_ENV,
        )
        return []
    items: list[EvalItem] = []
    with tsv.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"file", "text"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{tsv}: missing column(s) {sorted(missing)}")
        for row in reader:
            rel = row["file"].strip()
            text = normalize_reference(row["text"])
            if not rel or not text:
                log.warning("%s: skipping row with empty file or text: %r", tsv, row)
                continue
            extra = {k: (v or "") for k, v in row.items() if k not in ("file", "text", "speaker")}
            items.append(
                EvalItem(
                    id=f"{name}/{Path(rel).stem}",
                    path=root / rel,
                    text=text,
                    speaker=(row.get("speaker") or "").strip(),
                    set_name=name,
                    meta=extra,
                )
            )
    log.info("loaded %d utterances from %s", len(items), tsv)
    return items


def real_eval_sets(data_dir: Path | None = None) -> dict[str, list[EvalItem]]:
    """Every real set that is present, by name (absent sets are left out, with a warning)."""
    out: dict[str, list[EvalItem]] = {}
    for name in REAL_SETS:
        items = load_real_set(name, data_dir)
        if items:
            out[name] = items
    return out
