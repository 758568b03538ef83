"""Train the neural biasing module (TCPGen, :mod:`edgeasr.model.biaser`) on a frozen model.

Training material has to look like the job: a contact list of ~100 names, sometimes one of them
spoken, and names the acoustic model has never heard. So the module trains on

* utterances with **made-up surnames** (:func:`edgeasr.corpus.text.pseudo_names`), rendered
  with the corpus recipe by *training* voices (cached in ``<corpus>/biaser/``), each with a
  context list holding its name plus distractors; and
* as many ordinary requests (the corpus' own text generator, new sentences), rendered the same
  way, whose context lists hold distractors only, so the gate learns to stay shut when no
  listed name is said.

All audio is rendered afresh rather than taken from the corpus: on the utterances the model was
trained on it is far more confident than on new audio, and a gate trained there would learn to
trust a confidence it does not have at test time.

Distractors come from the other made-up names and the common first names and surnames, never
from a word of the reference, never from the long-tail or held-out names the biasing benchmark
scores. The base model stays frozen, so the module cannot change what the model does without a
context list. The loss is the RNN-T loss of the biased distribution; the unbiased model's loss on
the same lattices is logged beside it, on a held-back part of the made-up-name utterances.
Checkpoints after every epoch let an interrupted run resume.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from edgeasr.fileio import atomic_write_bytes, sha256_file
from edgeasr.losses.rnnt import joint_logprobs, rnnt_loss_from_logprobs
from edgeasr.model.biaser import BiaserConfig, PointerBiaser
from edgeasr.model.transducer import Transducer
from edgeasr.search.pointer import PointerTrie
from edgeasr.tokenizer import BLANK_ID, Tokenizer

log = logging.getLogger(__name__)

BIASER_FILE = "biaser.safetensors"


@dataclass(frozen=True)
class BiaserTrainConfig:
    """What :func:`train_biaser` does; stored with the module so a run can be reproduced."""

    names: int = 2000  # made-up surnames rendered into utterances
    synth_utts: int = 6000  # utterances with one of them (5% held back for the log)
    plain_utts: int = 4000  # ordinary requests with distractor-only lists
    context_min: int = 50  # context list sizes drawn uniformly from [min, max]
    context_max: int = 150
    epochs: int = 5
    max_frames: int = 8000  # padded fbank frames per batch
    lr: float = 3e-3
    seed: int = 0
    model: BiaserConfig = field(default_factory=BiaserConfig)


@dataclass
class Example:
    """One training utterance with its pointer masks (per reference prefix)."""

    feats: np.ndarray  # (T, 80) raw fbank
    tokens: list[int]
    valid: np.ndarray  # (U+1, V) bool
    trie_feats: np.ndarray  # (U+1, F) float32
    has_name: bool


def _context(
    rng: random.Random, text: str, targets: list[str], pool: list[str], k: int
) -> list[str]:
    words = set(text.split())
    cands = [n for n in pool if n not in words]
    out = targets + rng.sample(cands, max(0, min(k - len(targets), len(cands))))
    rng.shuffle(out)
    return out


def make_example(
    feats: np.ndarray, text: str, context: list[str], tokenizer: Tokenizer, has_name: bool
) -> Example:
    tokens = tokenizer.encode(text)
    trie = PointerTrie.from_phrases(context, tokenizer)
    states = trie.states(tokens)
    return Example(
        feats.astype(np.float32),
        tokens,
        trie.valid(states) > 0,
        trie.features(states),
        has_name,
    )


def build_examples(
    corpus: Path, tokenizer: Tokenizer, cfg: BiaserTrainConfig, jobs: int = 2
) -> tuple[list[Example], list[Example]]:
    """(training examples, held-back made-up-name examples), deterministic for ``cfg.seed``."""
    from edgeasr.corpus.extra import load_flac, synth_texts, synthesize_beside
    from edgeasr.corpus.text import FIRST_NAMES, SURNAMES, generate_utterances, pseudo_names
    from edgeasr.features import compute_fbank

    rng = random.Random(f"edgeasr-biaser:{cfg.seed}")
    names = list(pseudo_names(cfg.names, cfg.seed))
    pool = list(dict.fromkeys([*names, *FIRST_NAMES, *SURNAMES]))
    name_set = set(names)

    cache = corpus / "biaser"
    named = synth_texts(cfg.synth_utts, cfg.seed, names, "biaser-train", set())
    plain = generate_utterances(cfg.plain_utts, cfg.seed, stream="biaser-plain")
    sets = []
    for tag, texts in (("train", named), ("plain", plain)):
        if texts:
            split = f"biaser-{tag}-s{cfg.seed}"
            sets.append((tag, synthesize_beside(corpus, "train", cache, split, texts, jobs)))
    out: dict[str, list[Example]] = {"train": [], "plain": []}
    for tag, records in sets:
        for rec in tqdm(records, desc=f"biaser {tag} examples", unit="utt", disable=None):
            text = rec["text"]
            targets = list(dict.fromkeys(w for w in text.split() if w in name_set))
            k = rng.randint(cfg.context_min, cfg.context_max)
            ctx = _context(rng, text, targets, pool, k)
            feats = compute_fbank(load_flac(rec["path"]))
            out[tag].append(make_example(feats, text, ctx, tokenizer, bool(targets)))
    synth = out["train"]
    n_hold = max(1, len(synth) // 20)
    return synth[n_hold:] + out["plain"], synth[:n_hold]


def _batches(examples: list[Example], max_frames: int, rng: random.Random) -> list[list[int]]:
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].feats))
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        n = len(examples[i].feats)
        if cur and n * (len(cur) + 1) > max_frames:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def _collate(examples: list[Example]) -> tuple[torch.Tensor, ...]:
    B = len(examples)
    T = max(len(e.feats) for e in examples)
    U = max(1, max(len(e.tokens) for e in examples))
    V, F = examples[0].valid.shape[1], examples[0].trie_feats.shape[1]
    x = torch.zeros(B, T, examples[0].feats.shape[1])
    y = torch.zeros(B, U, dtype=torch.long)
    valid = torch.zeros(B, U + 1, V)
    tf = torch.zeros(B, U + 1, F)
    for b, e in enumerate(examples):
        x[b, : len(e.feats)] = torch.from_numpy(e.feats)
        n = len(e.tokens)
        y[b, :n] = torch.tensor(e.tokens, dtype=torch.long)
        valid[b, : n + 1] = torch.from_numpy(e.valid.astype(np.float32))
        tf[b, : n + 1] = torch.from_numpy(e.trie_feats)
    lens = torch.tensor([len(e.feats) for e in examples])
    ulens = torch.tensor([len(e.tokens) for e in examples])
    return x, lens, y, ulens, valid, tf


def batch_loss(
    model: Transducer, biaser: PointerBiaser, examples: list[Example], biased: bool = True
) -> torch.Tensor:
    """Summed RNN-T loss of a batch under the biased (or, ``biased=False``, the frozen model's
    own) distribution; the model runs without gradients."""
    x, lens, y, ulens, valid, tf = _collate(examples)
    with torch.no_grad():
        enc, enc_lens, _ = model.encode(x, lens)
        dec = model.joiner.dec_proj(model.predictor(y))
    if biased:
        blank, label = biaser.lattice_log_probs(enc, dec, y, valid, tf)
    else:
        with torch.no_grad():
            lat = joint_logprobs(model.joiner, enc, dec, y, model.cfg.vocab_size, BLANK_ID)
            blank, label = lat.blank, lat.label
    return rnnt_loss_from_logprobs(blank, label, enc_lens, ulens).sum()


def mean_loss(
    model: Transducer, biaser: PointerBiaser, examples: list[Example], biased: bool
) -> float:
    """Loss per reference token over ``examples``."""
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), 16):
            chunk = examples[i : i + 16]
            total += float(batch_loss(model, biaser, chunk, biased))
            tokens += sum(len(e.tokens) for e in chunk)
    return total / max(tokens, 1)


def _resume_key(cfg: BiaserTrainConfig) -> dict:
    """What must match for a checkpoint to be resumed: everything but the number of epochs."""
    return {k: v for k, v in asdict(cfg).items() if k != "epochs"}


def _save_checkpoint(
    path: Path, biaser: PointerBiaser, opt, epoch: int, cfg: BiaserTrainConfig
) -> None:
    """Weights and optimizer as safetensors, then the JSON state last (it marks completion)."""
    from edgeasr.model.checkpoint import save_optimizer

    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in biaser.state_dict().items()}, str(tmp))
    tmp.replace(path)
    extra = save_optimizer(opt, path.with_suffix(".opt.safetensors"))
    state = {"epoch": epoch, "optimizer": extra, "config": _resume_key(cfg)}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(state).encode())


def train_biaser(
    model_dir: str | Path,
    corpus: str | Path,
    cfg: BiaserTrainConfig | None = None,
    work_dir: str | Path | None = None,
    threads: int = 2,
) -> dict:
    """Build the material, train the module with the model frozen, store it in the package.

    Returns the info written to the package manifest (losses before and after, sizes, time).
    """
    import time

    from edgeasr.model.checkpoint import load_package

    cfg = cfg or BiaserTrainConfig()
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    corpus = Path(corpus)
    model, tokenizer, _ = load_package(model_dir)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    t0 = time.perf_counter()
    train, held = build_examples(corpus, tokenizer, cfg, threads)
    t_data = time.perf_counter() - t0
    biaser = PointerBiaser(model.joiner, cfg.model)
    opt = torch.optim.AdamW(biaser.parameters(), lr=cfg.lr, weight_decay=1e-4)
    work = Path(work_dir) if work_dir else Path(model_dir) / "biaser-work"
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "checkpoint.safetensors"
    start = 0
    state = (
        json.loads(ckpt.with_suffix(".json").read_text())
        if ckpt.is_file() and ckpt.with_suffix(".json").is_file()
        else None
    )
    if state is not None and state.get("config") != json.loads(json.dumps(_resume_key(cfg))):
        log.warning("%s is from other settings: not resumed, training from the start", ckpt)
        state = None
    if state is not None:
        from edgeasr.model.checkpoint import load_optimizer

        biaser.load_state_dict(load_file(str(ckpt)))
        load_optimizer(opt, ckpt.with_suffix(".opt.safetensors"), state["optimizer"])
        start = int(state["epoch"])
        log.info("resuming biaser training after epoch %d", start)
    base_held = mean_loss(model, biaser, held, biased=False)
    rng = random.Random(f"edgeasr-biaser-batches:{cfg.seed}")
    batches_per_epoch = [_batches(train, cfg.max_frames, rng) for _ in range(cfg.epochs)]
    total_steps = sum(len(b) for b in batches_per_epoch)
    step = sum(len(b) for b in batches_per_epoch[:start])  # steps done before a resume
    history = []
    for epoch in range(start, cfg.epochs):
        biaser.train()
        bar = tqdm(batches_per_epoch[epoch], desc=f"biaser epoch {epoch + 1}", unit="batch")
        run = 0.0
        for bi, idx in enumerate(bar):
            exs = [train[i] for i in idx]
            loss = batch_loss(model, biaser, exs) / sum(len(e.tokens) for e in exs)
            for group in opt.param_groups:  # cosine decay over the whole run
                group["lr"] = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / max(1, total_steps)))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(biaser.parameters(), 5.0)
            opt.step()
            step += 1
            run = 0.98 * run + 0.02 * loss.item() if bi else loss.item()
            bar.set_postfix(loss=f"{run:.3f}")
        biaser.eval()
        held_loss = mean_loss(model, biaser, held, biased=True)
        history.append({"epoch": epoch + 1, "held_loss": held_loss})
        log.info(
            "epoch %d: held-back loss/token %.4f (unbiased %.4f)", epoch + 1, held_loss, base_held
        )
        _save_checkpoint(ckpt, biaser, opt, epoch + 1, cfg)
    biaser.eval()
    info = {
        "train_utts": len(train),
        "train_utts_with_name": sum(e.has_name for e in train),
        "held_utts": len(held),
        "held_loss_per_token_unbiased": base_held,
        "held_loss_per_token_biased": mean_loss(model, biaser, held, biased=True),
        "history": history,
        "data_s": round(t_data, 1),
        "total_s": round(time.perf_counter() - t0, 1),
        "threads": threads,
        "config": {**asdict(cfg), "model": cfg.model.to_dict()},
    }
    save_biaser(model_dir, biaser, info)
    return info


def save_biaser(model_dir: str | Path, biaser: PointerBiaser, info: dict) -> None:
    """Add the module to a model package (weights, config and training info in the manifest)."""
    d = Path(model_dir)
    tmp = d / (BIASER_FILE + ".tmp")
    meta = {"config": json.dumps(biaser.cfg.to_dict())}
    save_file({k: v.contiguous() for k, v in biaser.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(d / BIASER_FILE)
    mf = d / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["files"][BIASER_FILE] = sha256_file(d / BIASER_FILE)
    manifest["biaser"] = {"file": BIASER_FILE, "config": biaser.cfg.to_dict(), "info": info}
    atomic_write_bytes(mf, json.dumps(manifest, indent=2).encode())


def load_biaser(path: str | Path, model: Transducer) -> PointerBiaser:
    """The module stored at ``path`` on top of ``model``'s joiner (safetensors, no pickle)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    biaser = PointerBiaser(model.joiner, BiaserConfig(**json.loads(meta["config"])))
    biaser.load_state_dict(load_file(str(path)))
    return biaser.eval()
