"""The prefix tree of a tree-constrained pointer generator (TCPGen) for neural biasing.

Shallow fusion (:mod:`edgeasr.search.context`) can only add a fixed bonus to a name's tokens. A
name the acoustic model finds very unlikely (one it never heard, spelt with pieces it rarely
emits) stays out of the beam however the bonus is tuned, and a larger bonus inserts names
everywhere. TCPGen (Sun et al., 2021, "Tree-constrained pointer generator for end-to-end
contextual speech recognition") instead lets a small trained module *point* at the tokens that
would continue a context word, and learns from data when to trust that pointer. The module is
:class:`edgeasr.model.biaser.PointerBiaser`; this file holds the part that changes with every
contact list and must run on the device without torch: the word-level prefix tree over token ids
and, per hypothesis, which tokens the pointer may choose and where in a word it is.

A state is an integer: :data:`OFF` (the current word is not the start of any context word, or
no word has begun) or a trie node (the current word so far spells a prefix of a context word).
The tokens the pointer may emit next are the node's children (continuing the word) plus the
first tokens of every context word (starting a new one, which any word-start piece may do).
States depend only on the token sequence, so the beam can still merge identical hypotheses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

OFF = 0  # state id: the current word is not in the tree
NUM_FEATURES = 5  # [off, depth 1, depth 2, depth >= 3, a complete context word ends here]


class PointerTrie:
    """Context words as a prefix tree over token ids, with per-state pointer masks.

    ``words`` are token-id sequences, one per context *word* (a phrase contributes each of its
    words: TCPGen works word by word). ``word_start[v]`` says whether token ``v`` begins a word
    (a sentencepiece piece starting with "▁"); it decides whether an emitted token continues the
    current word or begins a new one. Immutable after construction; shared by any number of
    streams.
    """

    def __init__(self, words: Iterable[Sequence[int]], word_start: np.ndarray) -> None:
        self.word_start = np.asarray(word_start, dtype=bool)
        V = len(self.word_start)
        # node 0 is OFF; node 1 is the root (never a hypothesis state: a word starts with a
        # token, which moves to a child of the root)
        self._children: list[dict[int, int]] = [{}, {}]
        self._depth = [0, 0]
        self._end = [False, False]
        self.words: list[tuple[int, ...]] = []
        for w in words:
            toks = tuple(int(t) for t in w)
            if not toks:
                continue
            if any(t <= 0 or t >= V for t in toks):
                raise ValueError(f"context word token ids {toks} outside 1..{V - 1}")
            if not self.word_start[toks[0]] or any(self.word_start[t] for t in toks[1:]):
                raise ValueError(f"token ids {toks} are not one word (word-start piece first only)")
            node = 1
            for t in toks:
                nxt = self._children[node].get(t)
                if nxt is None:
                    nxt = len(self._children)
                    self._children.append({})
                    self._depth.append(self._depth[node] + 1)
                    self._end.append(False)
                    self._children[node][t] = nxt
                node = nxt
            if not self._end[node]:
                self._end[node] = True
                self.words.append(toks)
        n = len(self._children)
        self.num_states = n
        starts = np.zeros(V, np.float32)
        starts[list(self._children[1])] = 1.0
        self._valid = np.repeat(starts[None], n, axis=0)
        for node, kids in enumerate(self._children):
            if node > 1:
                self._valid[node, list(kids)] = 1.0
        self._feats = np.zeros((n, NUM_FEATURES), np.float32)
        for node in range(n):
            d = self._depth[node]
            self._feats[node, 0 if d == 0 else min(d, 3)] = 1.0
            self._feats[node, 4] = float(self._end[node])

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        return f"PointerTrie({len(self.words)} words, {self.num_states} states)"

    @property
    def vocab_size(self) -> int:
        return len(self.word_start)

    @classmethod
    def from_phrases(cls, phrases: Sequence[str], tokenizer) -> PointerTrie:
        """Build from text: every word of every phrase, normalised like the training text and
        tokenised on its own. A contact list is user data: a word the vocabulary cannot spell
        as one word (unknown pieces) is left out rather than failing the whole list."""
        from edgeasr.textnorm import normalize_text

        V = tokenizer.vocab_size
        pieces = [tokenizer.id_to_piece(i) for i in range(V)]
        word_start = np.array([i > 0 and p.startswith("\u2581") for i, p in enumerate(pieces)])
        usable = np.array([i > 0 and p != "<unk>" for i, p in enumerate(pieces)])
        words = {w for p in phrases for w in normalize_text(p).split()}
        seqs = []
        for w in sorted(words):
            toks = tokenizer.encode(w)
            if (
                toks
                and usable[toks].all()
                and word_start[toks[0]]
                and not word_start[toks[1:]].any()
            ):
                seqs.append(toks)
        return cls(seqs, word_start)

    def step(self, state: int, token: int) -> int:
        """The state after emitting ``token`` (not blank) in ``state``."""
        if self.word_start[token]:
            return self._children[1].get(token, OFF)
        if state == OFF:
            return OFF
        return self._children[state].get(token, OFF)

    def states(self, tokens: Sequence[int]) -> list[int]:
        """States before each token of ``tokens`` and after the last (len + 1 entries)."""
        out = [OFF]
        for t in tokens:
            out.append(self.step(out[-1], t))
        return out

    def valid(self, states: Sequence[int] | np.ndarray) -> np.ndarray:
        """(N, V) float32: 1 where the pointer may emit the token next."""
        return self._valid[np.asarray(states, dtype=np.int64)]

    def features(self, states: Sequence[int] | np.ndarray) -> np.ndarray:
        """(N, :data:`NUM_FEATURES`) float32: where in a context word each state is."""
        return self._feats[np.asarray(states, dtype=np.int64)]
