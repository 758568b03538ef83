"""Sentencepiece BPE vocabulary with id 0 reserved for the transducer's blank.

Reserving id 0 as a pad piece named ``<blk>`` lets the model, search and runtime share one
vocabulary file without remapping ids. Only sentencepiece is imported, so the device can use it.
"""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm

BLANK_ID = 0


class Tokenizer:
    """A sentencepiece model held in memory, so it can travel inside a model package."""

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor()
        self._sp.LoadFromSerializedProto(model_proto)
        if self._sp.id_to_piece(BLANK_ID) != "<blk>":
            raise ValueError("tokenizer: id 0 must be the <blk> piece (train with edgeasr)")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        return cls(Path(path).read_bytes())

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.model_proto)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode([i for i in ids if i != BLANK_ID])

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(i)


def train_tokenizer(
    texts: list[str], vocab_size: int, seed_sentences: int = 2_000_000
) -> Tokenizer:
    """Train a BPE model on ``texts`` (normalised lowercase references)."""
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=proto,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        input_sentence_size=seed_sentences,
        shuffle_input_sentence=True,
        pad_id=BLANK_ID,
        pad_piece="<blk>",
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        num_threads=2,
        minloglevel=2,
        hard_vocab_limit=False,
    )
    return Tokenizer(proto.getvalue())


def without_nfkc_table(tok: Tokenizer, probes: list[str]) -> Tokenizer:
    """The same vocabulary without sentencepiece's NFKC character table (240 KB of the 243 KB
    model file), for the packed file, where every kilobyte counts.

    Every text our models see has been through :func:`edgeasr.textnorm.normalize_text`
    (lowercase ASCII words, single spaces), which NFKC leaves unchanged, so the ``identity``
    normaliser (sentencepiece's whitespace handling is kept) encodes it identically. That is
    checked on ``probes`` and on every piece; if anything differs the original is returned.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(tok.model_proto)
    if not proto.normalizer_spec.precompiled_charsmap:
        return tok
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.precompiled_charsmap = b""
    slim = Tokenizer(proto.SerializeToString())
    pieces = [tok.id_to_piece(i).replace("\u2581", " ").strip() for i in range(tok.vocab_size)]
    for text in [*probes, *(p for p in pieces if p.isascii() and p.strip())]:
        if slim.encode(text) != tok.encode(text):
            return tok
    return slim
