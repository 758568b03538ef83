"""Contextual biasing: a context graph over token ids for shallow fusion in beam search.

A voice assistant knows things the acoustic model does not: the names in the user's contacts,
the rooms and devices in their home. Shallow fusion adds a bonus to hypotheses that spell one of
those phrases, so a name the model finds slightly less likely than a common word still wins.
This follows k2/icefall's ``ContextGraph``: a trie over token ids with Aho–Corasick failure
links, walked one emitted token at a time alongside each beam hypothesis.

Scoring rule. Every occurrence of a phrase in a hypothesis earns that phrase's boost (the sum of
the per-token boosts along its trie path). So that the beam sees the bonus while a phrase is
still being spelled, and not only after its last token, a partial match is credited token by
token; when the next token breaks it, the credit that has not been earned by a complete phrase is
given back (the step's score delta is negative), and ``finalize`` gives it back at the end of the
utterance. Hence, at every step,

    running total = boosts of the phrases completed so far + credit of the current partial match

and a partial match that fails costs, and gains, nothing overall. The state after a complete
phrase is its trie node, whose failure link is the longest suffix still in the trie, so the
search continues into a longer phrase ("jon" → "jonathan"), into an overlapping one ("anna" →
"anna marie"), or from the fail target into the next phrase ("... jon ann ...").

This module imports only the standard library and numpy: the device runtime uses it without
torch (and without sentencepiece, which only :meth:`ContextGraph.from_phrases` needs, through
the tokenizer object it is given).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeasr.textnorm import normalize_text

if TYPE_CHECKING:
    from edgeasr.tokenizer import Tokenizer

# edgeasr.tokenizer.BLANK_ID, repeated rather than imported so this module does not pull in
# sentencepiece; tests check that the two agree.
_BLANK_ID = 0


@dataclass(frozen=True)
class Phrase:
    """A phrase of the graph: its token ids, the boost a complete match earns, and its text
    (the normalised text for graphs built with :meth:`ContextGraph.from_phrases`)."""

    tokens: tuple[int, ...]
    score: float
    text: str | None = None


class ContextState:
    """One trie node; beam search carries it as an opaque per-hypothesis state.

    The node is the Aho–Corasick state after the tokens so far: the longest suffix of them that
    is a prefix of some phrase. It is therefore a function of the token sequence, which lets the
    beam keep merging hypotheses with identical tokens.
    """

    __slots__ = (
        "id",
        "token",
        "depth",
        "token_score",
        "node_score",
        "is_end",
        "phrase",
        "next",
        "fail",
        "output",
        "output_score",
        "partial_score",
        "_child_tokens",
        "_child_gains",
    )

    def __init__(self, id: int, token: int, depth: int, token_score: float) -> None:
        self.id = id
        self.token = token  # the token on the arc into this node (-1 for the root)
        self.depth = depth
        # boost of the arc into this node (per-token boost of the phrase(s) through it)
        self.token_score = token_score
        # sum of token_score from the root: the credit of a partial match ending here
        self.node_score = 0.0
        self.is_end = False  # a complete phrase ends here
        self.phrase: Phrase | None = None
        self.next: dict[int, ContextState] = {}
        # longest proper suffix of this node's tokens that is also a trie node (None at root)
        self.fail: ContextState | None = None
        # nearest end node along the failure chain (excluding self): a shorter phrase that is a
        # suffix of this one and so completes at the same time
        self.output: ContextState | None = None
        # boosts of all phrases completing when the search enters this node
        self.output_score = 0.0
        # node_score not yet earned by a complete phrase (a prefix of the path that is a phrase
        # has already been paid when it completed): what a failing match gives back
        self.partial_score = 0.0
        self._child_tokens: np.ndarray = np.zeros(0, dtype=np.int64)
        self._child_gains: np.ndarray = np.zeros(0, dtype=np.float64)

    @property
    def gain(self) -> float:
        """Running-total contribution of entering this node: completed phrases + new credit."""
        return self.output_score + self.partial_score

    @property
    def matched(self) -> Phrase | None:
        """The longest phrase that completes on entering this node, if any."""
        if self.is_end:
            return self.phrase
        return self.output.phrase if self.output is not None else None

    def __repr__(self) -> str:
        return (
            f"ContextState(id={self.id}, depth={self.depth}, node_score={self.node_score:g}, "
            f"is_end={self.is_end})"
        )


class ContextGraph:
    """Biasing phrases as an Aho–Corasick automaton over token ids.

    Build with :meth:`build` (token-id lists) or :meth:`from_phrases` (text + tokenizer); start
    each utterance at :attr:`root`, call :meth:`forward_one_step` for every emitted (non-blank)
    token and :meth:`finalize` at the end. The graph is immutable after construction and may be
    shared by any number of concurrent searches.
    """

    def __init__(self, root: ContextState, phrases: list[Phrase], num_nodes: int) -> None:
        self.root = root
        self.phrases = phrases
        self.num_nodes = num_nodes
        self.max_token = max((t for p in phrases for t in p.tokens), default=-1)

    def __len__(self) -> int:
        return len(self.phrases)

    def __repr__(self) -> str:
        return f"ContextGraph({len(self.phrases)} phrases, {self.num_nodes} nodes)"

    # ----------------------------------------------------------------------------------------
    # construction
    # ----------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        token_lists: Sequence[Sequence[int]],
        boost: float = 2.0,
        per_phrase_boost: Sequence[float] | None = None,
        texts: Sequence[str | None] | None = None,
    ) -> ContextGraph:
        """A graph from phrases given as token-id lists.

        ``boost`` is the bonus per token (a log-probability added to the hypothesis score for
        each token of a match), so longer phrases, which the model is less likely to spell by
        chance, earn more. ``per_phrase_boost`` overrides it phrase by phrase. Where phrases
        share a prefix, the shared arcs carry the largest boost among them: the search cannot
        yet tell which phrase is being spelled, and a smaller boost would let the beam prune the
        more strongly boosted one. Empty token lists are skipped; a repeated phrase is kept once.
        ``texts`` optionally labels the phrases (reported in :class:`Phrase`).
        """
        n = len(token_lists)
        boosts = [boost] * n if per_phrase_boost is None else [float(b) for b in per_phrase_boost]
        if len(boosts) != n:
            raise ValueError(f"per_phrase_boost has {len(boosts)} values for {n} phrases")
        if texts is not None and len(texts) != n:
            raise ValueError(f"texts has {len(texts)} values for {n} phrases")
        for b in boosts:
            if not math.isfinite(b) or b < 0:
                raise ValueError(f"context boost must be finite and >= 0, got {b}")

        root = ContextState(0, -1, 0, 0.0)
        nodes = [root]
        ends: list[tuple[ContextState, tuple[int, ...], str | None]] = []
        for i, toks in enumerate(token_lists):
            toks = tuple(int(t) for t in toks)
            if not toks:
                continue
            for t in toks:
                if t == _BLANK_ID or t < 0:
                    raise ValueError(
                        f"phrase {i} has token id {t}; ids must be >= 1 (0 is the blank)"
                    )
            node = root
            for t in toks:
                child = node.next.get(t)
                if child is None:
                    child = ContextState(len(nodes), t, node.depth + 1, boosts[i])
                    nodes.append(child)
                    node.next[t] = child
                else:
                    child.token_score = max(child.token_score, boosts[i])
                node = child
            if not node.is_end:
                node.is_end = True
                ends.append((node, toks, None if texts is None else texts[i]))

        # Breadth-first, so a node's parent and failure target (both shallower) are final when
        # it is visited. Scores are computed here rather than during insertion because a later
        # phrase may raise the boost of a shared prefix.
        # (node, parent's node_score, node_score of the deepest phrase ending on the path)
        queue: deque[tuple[ContextState, float, float]] = deque()
        for child in root.next.values():
            child.fail = root
            queue.append((child, 0.0, 0.0))
        while queue:
            node, parent_score, paid = queue.popleft()
            node.node_score = parent_score + node.token_score
            fail = node.fail
            assert fail is not None
            node.output = fail if fail.is_end else fail.output
            node.output_score = (node.node_score if node.is_end else 0.0) + fail.output_score
            if node.is_end:
                paid = node.node_score
            node.partial_score = node.node_score - paid
            for t, child in node.next.items():
                f: ContextState | None = fail
                while f is not None and t not in f.next:
                    f = f.fail
                child.fail = f.next[t] if f is not None else root
                queue.append((child, node.node_score, paid))
        for node in nodes:
            toks = sorted(node.next)
            node._child_tokens = np.array(toks, dtype=np.int64)
            node._child_gains = np.array([node.next[t].gain for t in toks], dtype=np.float64)

        phrases = [Phrase(toks, end.node_score, text) for end, toks, text in ends]
        for (end, _, _), phrase in zip(ends, phrases, strict=True):
            end.phrase = phrase
        return cls(root, phrases, len(nodes))

    @classmethod
    def from_phrases(
        cls,
        phrases: Sequence[str],
        tokenizer: Tokenizer,
        boost: float = 2.0,
        per_phrase_boost: Sequence[float] | None = None,
        normalize: Callable[[str], str] | None = None,
    ) -> ContextGraph:
        """A graph from text phrases, normalised like the training text and then tokenised.

        The model only ever emits the token sequence of normalised text ("call jonathan"), so a
        phrase must be normalised the same way to be found; ``normalize`` defaults to
        :func:`edgeasr.textnorm.normalize_text`. Phrases that normalise to nothing are
        dropped, with their ``per_phrase_boost`` entry.
        """
        if per_phrase_boost is not None and len(per_phrase_boost) != len(phrases):
            raise ValueError(
                f"per_phrase_boost has {len(per_phrase_boost)} values for {len(phrases)} phrases"
            )
        normalize = normalize or normalize_text
        texts: list[str] = []
        boosts: list[float] = []
        for i, p in enumerate(phrases):
            text = normalize(p)
            if text:
                texts.append(text)
                boosts.append(boost if per_phrase_boost is None else per_phrase_boost[i])
        return cls.build([tokenizer.encode(t) for t in texts], boost, boosts, texts)

    # ----------------------------------------------------------------------------------------
    # search
    # ----------------------------------------------------------------------------------------

    def forward_one_step(
        self, state: ContextState, token: int
    ) -> tuple[float, ContextState, Phrase | None]:
        """Advance ``state`` by one emitted token: ``(score_delta, next_state, matched)``.

        If the token continues the match, the delta is the arc's boost. Otherwise the failure
        links lead to the longest suffix of the match that the token does continue (or to the
        root), and the delta gives back the credit of the abandoned partial match while
        crediting the new one, so it can be negative. Completing a phrase adds the boosts of all
        phrases ending here; ``matched`` is the longest of them.
        """
        node: ContextState | None = state
        while node is not None and token not in node.next:
            node = node.fail
        nxt = node.next[token] if node is not None else self.root
        return nxt.gain - state.partial_score, nxt, nxt.matched

    def finalize(self, state: ContextState) -> float:
        """Score delta at the end of an utterance: gives back an unfinished match's credit."""
        return 0.0 - state.partial_score

    def token_deltas(self, state: ContextState, vocab_size: int) -> np.ndarray:
        """``forward_one_step``'s score delta for every token id at once, as a (V,) array.

        Beam search uses this to rank candidates by their biased score before choosing them.
        Entry ``BLANK_ID`` is 0 (blank does not move the graph). The values are computed with
        the same float operations as ``forward_one_step`` and equal it exactly.
        """
        if self.max_token >= vocab_size:
            raise ValueError(
                f"context graph uses token id {self.max_token}, "
                f"but the model's vocabulary has {vocab_size} ids"
            )
        p = state.partial_score
        out = np.full(vocab_size, 0.0 - p, dtype=np.float64)
        chain: list[ContextState] = []
        node: ContextState | None = state
        while node is not None:
            chain.append(node)
            node = node.fail
        for node in reversed(chain):  # deeper suffixes (longer matches) overwrite shallower
            if node._child_tokens.size:
                out[node._child_tokens] = node._child_gains - p
        out[_BLANK_ID] = 0.0
        return out
