"""Feature cache and length-bucketed batches for training and evaluation.

Fbank features are computed once per split from the lhotse cuts (on both cores) and stored as a
single float16 array plus a JSONL index, so each training epoch only slices memory instead of
decoding FLAC and recomputing filterbanks. The cache is keyed by the cut manifest's checksum and
rebuilt if the manifest changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet
from tqdm import tqdm

from edgeasr.features import compute_fbank

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: log-mel floor (FbankConfig.floor_noise_std)


@dataclass(frozen=True)
class Utterance:
    id: str
    offset: int  # first frame in the cache array
    num_frames: int
    text: str
    speaker: str


def cuts_path(corpus_dir: Path, split: str) -> Path:
    return Path(corpus_dir) / "manifests" / f"{split}_cuts.jsonl.gz"


def _cut_features(cut_json: dict) -> tuple[str, np.ndarray]:
    from lhotse.serialization import deserialize_item

    cut = deserialize_item(cut_json)
    samples = cut.load_audio()[0]
    return cut.id, compute_fbank(samples).astype(np.float16)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FeatureCache:
    """Features of one split: ``feats`` (N_frames, 80) float16 memmap and the utterance index."""

    def __init__(self, feats: np.ndarray, utts: list[Utterance]) -> None:
        self.feats = feats
        self.utts = utts

    def __len__(self) -> int:
        return len(self.utts)

    def features(self, utt: Utterance) -> np.ndarray:
        return np.asarray(self.feats[utt.offset : utt.offset + utt.num_frames], dtype=np.float32)

    @classmethod
    def build(cls, cuts_file: Path, cache_dir: Path, jobs: int = 2) -> FeatureCache:
        cache_dir.mkdir(parents=True, exist_ok=True)
        name = cuts_file.name.replace("_cuts.jsonl.gz", "")
        feats_file = cache_dir / f"{name}.feats.npy"
        index_file = cache_dir / f"{name}.index.jsonl"
        meta_file = cache_dir / f"{name}.meta.json"
        digest = _file_digest(cuts_file)
        if meta_file.exists() and feats_file.exists() and index_file.exists():
            meta = json.loads(meta_file.read_text())
            if meta.get("cuts_sha256") == digest and meta.get("version") == CACHE_VERSION:
                return cls.load(cache_dir, name)
        cuts = CutSet.from_file(cuts_file)
        cut_list = list(cuts)
        by_id = {c.id: c for c in cut_list}
        arrays: list[np.ndarray] = []
        utts: list[Utterance] = []
        offset = 0
        payload = [c.to_dict() for c in cut_list]
        with Pool(jobs) as pool:
            it = pool.imap(_cut_features, payload, chunksize=16)
            for cut_id, f in tqdm(it, total=len(payload), desc=f"fbank {name}", unit="utt"):
                cut = by_id[cut_id]
                sup = cut.supervisions[0]
                arrays.append(f)
                utts.append(Utterance(cut_id, offset, len(f), sup.text, sup.speaker or ""))
                offset += len(f)
        np.save(feats_file, np.concatenate(arrays) if arrays else np.zeros((0, 80), np.float16))
        with index_file.open("w") as fh:
            for u in utts:
                fh.write(json.dumps(u.__dict__) + "\n")
        meta_file.write_text(json.dumps({"version": CACHE_VERSION, "cuts_sha256": digest}))
        return cls.load(cache_dir, name)

    @classmethod
    def load(cls, cache_dir: Path, name: str) -> FeatureCache:
        feats = np.load(cache_dir / f"{name}.feats.npy", mmap_mode="r")
        utts = [
            Utterance(**json.loads(line))
            for line in (cache_dir / f"{name}.index.jsonl").read_text().splitlines()
        ]
        return cls(feats, utts)

    def mean_std(self, max_frames: int = 2_000_000) -> tuple[np.ndarray, np.ndarray]:
        """Global feature statistics (on a strided subset for very large caches)."""
        step = max(1, len(self.feats) // max_frames)
        x = np.asarray(self.feats[::step], dtype=np.float64)
        return x.mean(0).astype(np.float32), x.std(0).astype(np.float32)


class MixedCache:
    """Chosen utterances of several caches as one cache: an epoch's training set when a fine-tune
    rehearses a fresh sample of the original corpus each epoch (``TrainConfig.replay_utts``).

    Offsets are shifted into one address space (cache k starts after the frames of caches
    0..k-1), so :meth:`features` finds the right array even when two corpora share cut ids, as an
    update corpus and the base corpus it replays do.
    """

    def __init__(self, parts: Sequence[tuple[FeatureCache, Sequence[Utterance]]]) -> None:
        self._caches: list[FeatureCache] = []
        self._starts: list[int] = []
        self.utts: list[Utterance] = []
        start = 0
        for cache, utts in parts:
            self._caches.append(cache)
            self._starts.append(start)
            self.utts += [replace(u, offset=u.offset + start) for u in utts]
            start += len(cache.feats)

    def __len__(self) -> int:
        return len(self.utts)

    def part(self, utt: Utterance) -> int:
        """Which of the caches (their order at construction) ``utt`` comes from."""
        return bisect_right(self._starts, utt.offset) - 1

    def features(self, utt: Utterance) -> np.ndarray:
        k = self.part(utt)
        return self._caches[k].features(replace(utt, offset=utt.offset - self._starts[k]))


@dataclass
class Batch:
    feats: torch.Tensor  # (B, T, 80)
    feat_lens: torch.Tensor
    targets: torch.Tensor  # (B, U)
    target_lens: torch.Tensor
    utts: list[Utterance]


def make_batches(
    utts: list[Utterance], max_frames: int, seed: int, epoch: int, shuffle: bool = True
) -> list[list[int]]:
    """Group utterance indices into batches of similar length under a padded-frames budget.

    The order depends only on (seed, epoch), so a resumed run sees the same batches and every
    DDP rank can compute the same list and take its own share.
    """
    idx = list(range(len(utts)))
    rng = random.Random(seed * 1000 + epoch)
    if shuffle:
        rng.shuffle(idx)
    batches: list[list[int]] = []
    # Utterances are sorted by length within pools of several batches, so padding stays small;
    # large (accelerator) batches need proportionally larger pools.
    mean_frames = sum(u.num_frames for u in utts) / max(1, len(utts))
    pool_size = max(200, int(4 * max_frames / max(1.0, mean_frames)))
    for start in range(0, len(idx), pool_size):
        chunk = sorted(idx[start : start + pool_size], key=lambda i: utts[i].num_frames)
        cur: list[int] = []
        longest = 0
        for i in chunk:
            n = utts[i].num_frames
            if cur and max(longest, n) * (len(cur) + 1) > max_frames:
                batches.append(cur)
                cur, longest = [], 0
            cur.append(i)
            longest = max(longest, n)
        if cur:
            batches.append(cur)
    if shuffle:
        rng.shuffle(batches)
    return batches


def collate(cache: FeatureCache | MixedCache, indices: list[int], encode) -> Batch:
    """Pad features and token ids of the utterances ``indices`` into tensors."""
    utts = [cache.utts[i] for i in indices]
    feats = [cache.features(u) for u in utts]
    toks = [encode(u.text) for u in utts]
    B = len(utts)
    T = max(len(f) for f in feats)
    U = max(1, max(len(t) for t in toks))
    x = torch.zeros(B, T, feats[0].shape[1])
    y = torch.zeros(B, U, dtype=torch.long)
    for b, (f, t) in enumerate(zip(feats, toks, strict=True)):
        x[b, : len(f)] = torch.from_numpy(f)
        y[b, : len(t)] = torch.tensor(t, dtype=torch.long)
    return Batch(
        x,
        torch.tensor([len(f) for f in feats]),
        y,
        torch.tensor([len(t) for t in toks]),
        utts,
    )


def iterate_batches(
    cache: FeatureCache | MixedCache, batches: list[list[int]], encode, start: int = 0
) -> Iterator[tuple[int, Batch]]:
    for i in range(start, len(batches)):
        yield i, collate(cache, batches[i], encode)
