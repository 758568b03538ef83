"""Greedy and modified beam search for a transducer with a stateless predictor.

The search sees the model only through :class:`Scorer` (predictor and joiner on numpy arrays), so
the training-side torch model and the device-side onnxruntime sessions use the same code. The
encoder output is passed in already projected for the joiner.

Modified beam search (as in icefall) emits at most one symbol per frame, which keeps the beam
synchronous in time and makes streaming trivial: the beam after frame t is the whole state.

Contextual biasing (shallow fusion with a :class:`~edgeasr.search.context.ContextGraph`) adds a
phrase bonus to each hypothesis' ranking score and leaves its log-probability untouched. Neural
biasing (a :class:`~edgeasr.search.pointer.PointerTrie` and a scorer with a trained pointer
generator, :mod:`edgeasr.model.biaser`) changes the distribution itself: the scorer mixes a
pointer over the context words' next tokens into the joiner's output. The two can be combined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from edgeasr.search.context import ContextGraph, ContextState
from edgeasr.search.pointer import OFF, PointerTrie
from edgeasr.tokenizer import BLANK_ID

DEFAULT_BEAM = 4


def tuned_beam(decoding: Mapping) -> int:
    """The beam a package's decoding settings (its manifest's ``decoding`` section) ask for.

    ``edgeasr tune-decoding`` records the beam whose N-best the second pass was tuned on: its
    weights hold for that N-best, and a smaller beam gives up much of its gain (the bundled
    model on test: 7.97% WER over the 16-best, 10.58% over the 4-best; README), so decoding
    defaults to it. 4 for an untuned package.
    """
    beam = decoding.get("beam", DEFAULT_BEAM)
    if not isinstance(beam, int) or isinstance(beam, bool) or beam < 1:
        raise ValueError(f"decoding settings: beam must be a positive integer, got {beam!r}")
    return beam


class Scorer(Protocol):
    """What search needs from a model: both return arrays already projected to the joiner dim."""

    context_size: int

    def decoder(self, contexts: np.ndarray) -> np.ndarray:
        """(N, context_size) int64 token ids → (N, J) float32."""
        ...

    def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """(N, J) encoder frames and (N, J) decoder outputs → (N, V) logits."""
        ...


class BiasingScorer(Scorer, Protocol):
    """A scorer with a trained pointer generator (needed only for neural biasing)."""

    def biased_log_probs(
        self,
        enc: np.ndarray,
        dec: np.ndarray,
        valid: np.ndarray,
        feats: np.ndarray,
        blank_penalty: float,
        gate_offset: float = 0.0,
    ) -> np.ndarray:
        """(N, J), (N, J), pointer masks (N, V) and trie features (N, F) → (N, V) log-probs;
        ``gate_offset`` is added to the pointer gate's logit."""
        ...


@dataclass
class Hypothesis:
    """One search result: token ids, total log-probability and the frame of each token.

    ``scores[k]`` is the hypothesis' log-probability right after emitting token ``k``; the
    differences between them split the total into per-word acoustic scores for lattices.

    With contextual biasing, ``context_state`` is the hypothesis' node in the context graph and
    ``context_score`` its accumulated phrase bonus. The bonus is kept apart from ``log_prob`` (and
    ``scores``), which stay the model's calibrated log-probability for lattices and confidences;
    the search ranks by ``log_prob + context_score``.
    """

    tokens: list[int]
    log_prob: float
    frames: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    context_state: ContextState | None = None
    context_score: float = 0.0
    pointer_state: int = OFF


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    y = x - m
    return y - np.log(np.exp(y).sum(axis=-1, keepdims=True))


def _joint_log_probs(
    scorer: Scorer, enc: np.ndarray, dec: np.ndarray, blank_penalty: float
) -> np.ndarray:
    """Joiner log-probabilities with ``blank_penalty`` taken off the blank logit first."""
    logits = scorer.joiner(enc, dec)
    if blank_penalty:
        logits = logits.copy()
        logits[:, BLANK_ID] -= blank_penalty
    return _log_softmax(logits)


def context(tokens: list[int], size: int) -> list[int]:
    """The predictor input for a hypothesis: its last ``size`` tokens, blank-padded."""
    ctx = tokens[-size:]
    return [BLANK_ID] * (size - len(ctx)) + ctx


def greedy_search(
    scorer: Scorer, enc: np.ndarray, max_symbols_per_frame: int = 3, blank_penalty: float = 0.0
) -> Hypothesis:
    """Best-path decoding of one utterance; enc is (T, J).

    ``blank_penalty`` is subtracted from the blank logit: a model that drops words (deletions)
    emits blank too eagerly, and a penalty tuned on dev data trades deletions for insertions.
    """
    tokens: list[int] = []
    frames: list[int] = []
    scores: list[float] = []
    total = 0.0
    dec = scorer.decoder(np.array([context(tokens, scorer.context_size)], dtype=np.int64))
    for t in range(enc.shape[0]):
        for _ in range(max_symbols_per_frame):
            lp = _joint_log_probs(scorer, enc[t : t + 1], dec, blank_penalty)[0]
            k = int(lp.argmax())
            total += float(lp[k])
            if k == BLANK_ID:
                break
            tokens.append(k)
            frames.append(t)
            scores.append(total)
            dec = scorer.decoder(np.array([context(tokens, scorer.context_size)], dtype=np.int64))
    return Hypothesis(tokens, total, frames, scores)


class BeamState:
    """The beam after some frames; kept between calls so search can run chunk by chunk.

    The context graph and the pointer trie belong to the state, not to the search call: the
    hypotheses' context and pointer states are nodes of them. To bias a new utterance towards
    other phrases, start it with a new ``BeamState`` built with the other graph or trie.
    """

    def __init__(
        self,
        context_size: int,
        context_graph: ContextGraph | None = None,
        history: Sequence[int] = (),
        pointer: PointerTrie | None = None,
    ) -> None:
        root = context_graph.root if context_graph is not None else None
        self.hyps: list[Hypothesis] = [Hypothesis([], 0.0, context_state=root)]
        self.frame = 0
        self.context_size = context_size
        self.context_graph = context_graph
        # Neural biasing: the context words' prefix tree; the scorer must be a BiasingScorer.
        self.pointer = pointer
        # Tokens said before this state's first frame in the same stream (the utterance an
        # end-pointer just closed): the predictor sees them as context until the new
        # hypotheses have tokens of their own, as in training, where the silence after a
        # sentence always came with that sentence's last tokens as context. They are not
        # part of any hypothesis.
        self.history = list(history[-context_size:]) if context_size else []


def modified_beam_search(
    scorer: Scorer,
    enc: np.ndarray,
    beam: int = 4,
    state: BeamState | None = None,
    blank_penalty: float = 0.0,
    *,
    context_graph: ContextGraph | None = None,
    pointer: PointerTrie | None = None,
    gate_offset: float = 0.0,
) -> BeamState:
    """Advance the beam over the frames in ``enc`` (T, J); call repeatedly for streaming.

    Hypotheses reaching the same token sequence are merged by adding their probabilities
    (log-sum-exp), so the N-best lists distinct transcripts with calibrated scores.

    ``context_graph`` biases the search towards its phrases: candidates are chosen and the beam
    pruned by ``log_prob + context_score``, where emitting a token moves the hypothesis through
    the graph and adds the step's bonus to ``context_score``. It applies when a new state is
    created; a state passed in keeps the graph it was created with (passing a different one is
    an error). Without a graph the search is exactly the unbiased one.

    ``pointer`` (neural biasing; ``scorer`` must be a :class:`BiasingScorer`) takes the frame's
    log-probabilities from the scorer's pointer generator, given each hypothesis' place in the
    context words' prefix tree; it too belongs to the state it creates. ``gate_offset`` shifts
    the pointer gate's logit (negative: fewer names inserted, fewer recalled).
    """
    if state is None:
        st = BeamState(scorer.context_size, context_graph, pointer=pointer)
    else:
        st = state
        if context_graph is not None and context_graph is not st.context_graph:
            raise ValueError(
                "context_graph differs from the one the BeamState was created with; "
                "start a new BeamState(context_size, context_graph) to change the context"
            )
        if pointer is not None and pointer is not st.pointer:
            raise ValueError("pointer differs from the one the BeamState was created with")
    graph, trie = st.context_graph, st.pointer
    if trie is not None and not hasattr(scorer, "biased_log_probs"):
        raise ValueError("neural biasing needs a scorer with a pointer generator (a biaser)")
    for t in range(enc.shape[0]):
        hyps = st.hyps
        ctx = np.array(
            [context(st.history + h.tokens[-st.context_size :], st.context_size) for h in hyps],
            dtype=np.int64,
        )
        dec = scorer.decoder(ctx)
        frame = np.repeat(enc[t : t + 1], len(hyps), axis=0)
        if trie is None:
            lp = _joint_log_probs(scorer, frame, dec, blank_penalty)
        else:
            states = [h.pointer_state for h in hyps]
            lp = scorer.biased_log_probs(  # type: ignore[attr-defined]
                frame, dec, trie.valid(states), trie.features(states), blank_penalty, gate_offset
            )
        scores = lp + np.array([h.log_prob for h in hyps])[:, None]
        flat = scores.reshape(-1)
        V = lp.shape[1]
        if graph is None:
            rank = flat
        else:
            # every candidate's bonus, so that a boosted token can enter the beam at all
            bonus = np.stack(
                [h.context_score + graph.token_deltas(h.context_state, V) for h in hyps]
            )
            rank = flat + bonus.reshape(-1)
        k = min(beam * 2, rank.size)
        top = np.argpartition(-rank, k - 1)[:k]
        top = top[np.argsort(-rank[top])]
        merged: dict[tuple[int, ...], Hypothesis] = {}
        for idx in top:
            h_i, tok = divmod(int(idx), V)
            h = hyps[h_i]
            s = float(flat[idx])
            if tok == BLANK_ID:
                new = replace(h, log_prob=s)
            else:
                c_state, c_score = h.context_state, h.context_score
                if graph is not None:
                    delta, c_state, _ = graph.forward_one_step(c_state, tok)
                    c_score = c_score + delta
                p_state = trie.step(h.pointer_state, tok) if trie is not None else OFF
                new = Hypothesis(
                    h.tokens + [tok],
                    s,
                    h.frames + [st.frame],
                    h.scores + [s],
                    c_state,
                    c_score,
                    p_state,
                )
            # The context and pointer states and the context score are functions of the tokens,
            # so merging identical token sequences only has to combine the log-probabilities.
            key = tuple(new.tokens)
            if key in merged:
                old = merged[key]
                old.log_prob = float(np.logaddexp(old.log_prob, s))
            else:
                merged[key] = new
        st.hyps = sorted(merged.values(), key=_log_prob_key if graph is None else _rank_key)[:beam]
        st.frame += 1
    return st


def _log_prob_key(h: Hypothesis) -> float:
    return -h.log_prob


def _rank_key(h: Hypothesis) -> float:
    return -(h.log_prob + h.context_score)


def nbest(
    state: BeamState, n: int | None = None, finalize_context: bool = True
) -> list[Hypothesis]:
    """Hypotheses of a beam, best first.

    With a context graph they are ordered by ``log_prob + context_score``; ``finalize_context``
    first takes back the bonus of phrases left half-spelt at the end (as the utterance is over),
    on copies, so the beam itself can go on decoding if more audio arrives.
    """
    graph = state.context_graph
    if graph is None:
        hyps = sorted(state.hyps, key=_log_prob_key)
    else:
        hyps = list(state.hyps)
        if finalize_context:
            hyps = [
                replace(h, context_score=h.context_score + graph.finalize(h.context_state))
                for h in hyps
            ]
        hyps.sort(key=_rank_key)
    return hyps if n is None else hyps[:n]
