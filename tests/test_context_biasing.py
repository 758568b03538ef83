"""Contextual biasing: the context graph's scoring and its shallow fusion into beam search."""

from __future__ import annotations

import numpy as np
import pytest

from edgeasr import tokenizer as tokenizer_module
from edgeasr.search import context as context_module
from edgeasr.search.beam import BeamState, Hypothesis, modified_beam_search, nbest
from edgeasr.search.context import ContextGraph
from edgeasr.tokenizer import BLANK_ID, train_tokenizer


def walk(graph: ContextGraph, tokens: list[int], finalize: bool = True):
    """Run tokens through the graph: (per-step deltas, total, matched phrases, final state)."""
    state = graph.root
    deltas, matched = [], []
    for t in tokens:
        d, state, m = graph.forward_one_step(state, t)
        deltas.append(d)
        if m is not None:
            matched.append(m.tokens)
    total = sum(deltas) + (graph.finalize(state) if finalize else 0.0)
    return deltas, total, matched, state


def occurrences(seq: list[int], phrase: tuple[int, ...]) -> int:
    n = len(phrase)
    return sum(tuple(seq[i : i + n]) == phrase for i in range(len(seq) - n + 1))


# ------------------------------------------------------------------------------------------------
# the graph
# ------------------------------------------------------------------------------------------------


def test_blank_id_constant_matches_tokenizer():
    assert context_module._BLANK_ID == tokenizer_module.BLANK_ID


def test_full_match_earns_boost_per_token():
    g = ContextGraph.build([[5, 6, 7]], boost=1.5)
    deltas, total, matched, state = walk(g, [5, 6, 7])
    assert deltas == [1.5, 1.5, 1.5]
    assert matched == [(5, 6, 7)]
    assert total == 4.5
    assert g.finalize(state) == 0.0  # a completed phrase is not given back
    assert g.phrases[0].score == 4.5


def test_partial_match_then_fail_is_net_zero():
    g = ContextGraph.build([[5, 6, 7]], boost=2.0)
    deltas, total, matched, state = walk(g, [5, 6, 9, 3])
    assert deltas == [2.0, 2.0, -4.0, 0.0]
    assert total == 0.0 and matched == [] and state is g.root
    # unfinished at the end of the utterance: finalize gives the credit back
    deltas, total, _, state = walk(g, [1, 5, 6], finalize=False)
    assert sum(deltas) == 4.0 and g.finalize(state) == -4.0
    # failing into another partial match: only the abandoned part is given back
    deltas, total, _, _ = walk(g, [5, 6, 5, 6, 7])
    assert deltas == [2.0, 2.0, -2.0, 2.0, 2.0] and total == 6.0


def test_overlapping_phrases_prefix_inside_longer():
    jon, jonathan = [10, 11, 12], [10, 11, 12, 13, 14, 15]
    g = ContextGraph.build([jon, jonathan], boost=1.0)
    # "jon" completes and the search continues into "jonathan": both phrases earn their boost
    deltas, total, matched, _ = walk(g, jonathan)
    assert matched == [tuple(jon), tuple(jonathan)]
    assert total == 3.0 + 6.0
    assert all(d > 0 for d in deltas)
    # "jon" then something else: "jon" is kept, the extra partial credit is given back
    _, total, matched, _ = walk(g, [10, 11, 12, 13, 2])
    assert matched == [tuple(jon)] and total == 3.0
    _, total, _, _ = walk(g, [10, 11, 12, 13])
    assert total == 3.0


def test_overlapping_phrases_suffix_and_chained():
    ann, anna_marie, marie = (1, 2, 2), (1, 2, 2, 3, 4, 5), (4, 5)
    g = ContextGraph.build([list(ann), list(anna_marie), list(marie)], boost=1.0)
    # "anna marie" contains "ann" as a prefix and "marie" as a suffix: all three complete
    _, total, matched, _ = walk(g, list(anna_marie))
    assert matched == [ann, anna_marie]  # the longest phrase ending at each step is reported
    assert total == 3.0 + 6.0 + 2.0
    # "ann" then "marie" without the bridge: fall back to "marie" via failure links
    _, total, matched, _ = walk(g, [1, 2, 2, 4, 5])
    assert matched == [ann, marie] and total == 5.0


def test_shared_prefix_phrases():
    g = ContextGraph.build([[1, 2, 3], [1, 2, 4]], boost=1.0)
    assert g.num_nodes == 1 + 4
    for seq in ([1, 2, 3], [1, 2, 4]):
        _, total, matched, _ = walk(g, seq)
        assert total == 3.0 and matched == [tuple(seq)]
    _, total, matched, _ = walk(g, [1, 2, 5])
    assert total == 0.0 and matched == []


def test_back_to_back_phrases():
    g = ContextGraph.build([[1, 2], [3, 4]], boost=1.0)
    _, total, matched, _ = walk(g, [1, 2, 3, 4, 1, 2])
    assert matched == [(1, 2), (3, 4), (1, 2)] and total == 6.0
    # a phrase restarting inside a failed one
    _, total, matched, _ = walk(g, [1, 1, 2])
    assert matched == [(1, 2)] and total == 2.0


def test_per_phrase_boost_and_shared_arcs_take_the_max():
    g = ContextGraph.build([[1, 2], [3, 4, 5], [1, 6]], per_phrase_boost=[3.0, 0.5, 1.0])
    assert [p.score for p in g.phrases] == [6.0, 1.5, 3.0 + 1.0]
    assert walk(g, [3, 4, 5])[1] == 1.5
    assert walk(g, [1, 6])[1] == 4.0
    assert walk(g, [1, 2])[1] == 6.0


def test_empty_graph_is_a_no_op():
    g = ContextGraph.build([])
    assert len(g) == 0 and g.num_nodes == 1
    deltas, total, matched, state = walk(g, [1, 2, 3])
    assert deltas == [0.0, 0.0, 0.0] and total == 0.0 and matched == [] and state is g.root
    assert not ContextGraph.build([[], []]).phrases  # empty phrases are skipped


def test_invalid_phrases_rejected():
    with pytest.raises(ValueError, match="blank"):
        ContextGraph.build([[1, BLANK_ID]])
    with pytest.raises(ValueError, match="boost"):
        ContextGraph.build([[1]], boost=-1.0)
    with pytest.raises(ValueError, match="per_phrase_boost"):
        ContextGraph.build([[1], [2]], per_phrase_boost=[1.0])


def test_random_streams_score_every_occurrence_and_vector_deltas_match():
    """Net score = Σ occurrences × phrase score, for random phrases and token streams; the
    vectorised deltas used by beam search equal forward_one_step's exactly."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        phrases = {tuple(rng.integers(1, 5, rng.integers(1, 5))) for _ in range(4)}
        g = ContextGraph.build([list(p) for p in phrases], boost=float(rng.uniform(0.5, 2)))
        seq = [int(x) for x in rng.integers(1, 6, 30)]
        _, total, _, _ = walk(g, seq)
        expected = sum(occurrences(seq, p.tokens) * p.score for p in g.phrases)
        assert total == pytest.approx(expected)
        state = g.root
        for t in seq:
            vec = g.token_deltas(state, 6)
            assert vec[BLANK_ID] == 0.0
            for tok in range(1, 6):
                assert vec[tok] == g.forward_one_step(state, tok)[0]
            state = g.forward_one_step(state, t)[1]


def test_from_phrases_normalises_and_encodes():
    texts = ["call jonathan on his mobile", "turn on the kitchen lights", "play some music"] * 30
    tok = train_tokenizer(texts, 60)
    g = ContextGraph.from_phrases(
        ["Call JONATHAN!", "  ?? ", "the kitchen lights"], tok, per_phrase_boost=[1.0, 9.0, 3.0]
    )
    assert [p.text for p in g.phrases] == ["call jonathan", "the kitchen lights"]
    assert [list(p.tokens) for p in g.phrases] == [
        tok.encode("call jonathan"),
        tok.encode("the kitchen lights"),
    ]
    assert g.phrases[1].score == 3.0 * len(tok.encode("the kitchen lights"))
    ids = tok.encode("please call jonathan now")
    _, total, matched, _ = walk(g, ids)
    assert matched == [g.phrases[0].tokens] and total == g.phrases[0].score
    custom = ContextGraph.from_phrases(["Jonathan"], tok, normalize=str.lower)
    assert list(custom.phrases[0].tokens) == tok.encode("jonathan")


# ------------------------------------------------------------------------------------------------
# beam search
# ------------------------------------------------------------------------------------------------


class TableScorer:
    """A hand-made transducer: frame ``t``'s logits come from ``enc``, plus a small, fixed
    dependence on the previous token through the decoder."""

    context_size = 1

    def __init__(self, vocab: int, seed: int = 0, mix: float = 0.05) -> None:
        self.vocab = vocab
        self.w = (np.random.default_rng(seed).standard_normal((vocab, vocab)) * mix).astype(
            np.float32
        )

    def decoder(self, contexts: np.ndarray) -> np.ndarray:
        return np.eye(self.vocab, dtype=np.float32)[contexts[:, -1]]

    def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        return enc + dec @ self.w


class RandomScorer:
    """Random projection scorer with context size 2 (like the real predictor)."""

    context_size = 2

    def __init__(self, vocab: int = 12, dim: int = 8, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.emb = rng.standard_normal((vocab, dim)).astype(np.float32)
        self.out = rng.standard_normal((dim, vocab)).astype(np.float32)

    def decoder(self, contexts: np.ndarray) -> np.ndarray:
        return self.emb[contexts].sum(axis=1)

    def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        return np.tanh(enc + dec) @ self.out * 2.0


def ambiguous_frames() -> np.ndarray:
    """Acoustics that slightly prefer tokens 3 4 over the right 1 2, then silence."""
    V = 6
    enc = np.full((6, V), -5.0, dtype=np.float32)
    enc[:, BLANK_ID] = 0.0
    enc[0, [3, 1]] = [2.2, 2.0]
    enc[1, [4, 2]] = [2.2, 2.0]
    enc[2:, BLANK_ID] = 6.0
    return enc


def test_biasing_flips_an_acoustically_close_phrase():
    scorer, enc = TableScorer(6), ambiguous_frames()
    plain = nbest(modified_beam_search(scorer, enc, beam=4))
    assert plain[0].tokens == [3, 4]

    g = ContextGraph.build([[1, 2]], boost=1.0)
    biased = nbest(modified_beam_search(scorer, enc, beam=4, context_graph=g))
    best = biased[0]
    assert best.tokens == [1, 2] and best.context_score == 2.0
    # log_prob stays the model's own score: the same as the unbiased search gives [1, 2]
    ref = {tuple(h.tokens): h for h in plain}[(1, 2)]
    assert best.log_prob == pytest.approx(ref.log_prob, abs=1e-9)
    assert best.scores == pytest.approx(ref.scores, abs=1e-9)
    assert best.log_prob < plain[0].log_prob
    ranked = [h.log_prob + h.context_score for h in biased]
    assert ranked == sorted(ranked, reverse=True)


def test_unrelated_context_leaves_result_unchanged():
    scorer, enc = TableScorer(6), ambiguous_frames()
    plain = nbest(modified_beam_search(scorer, enc, beam=4))
    # token 2 starts the phrase (partial credit mid-search) but the phrase never completes
    g = ContextGraph.build([[5, 5], [2, 5]], boost=1.0)
    biased = nbest(modified_beam_search(scorer, enc, beam=4, context_graph=g))
    assert biased[0].tokens == plain[0].tokens
    assert biased[0].log_prob == pytest.approx(plain[0].log_prob, abs=1e-9)
    assert all(h.context_score == 0.0 for h in biased)  # finalised: nothing half-spelt counts


def test_streaming_with_context_equals_one_call():
    scorer = RandomScorer()
    enc = np.random.default_rng(1).standard_normal((60, 8)).astype(np.float32)
    plain = nbest(modified_beam_search(scorer, enc, beam=4))
    # phrases built from what the model tends to say, so the graph is exercised
    top = plain[0].tokens
    g = ContextGraph.build([top[1:3], top[4:7], [top[2], top[5]]], boost=1.5)
    offline = nbest(modified_beam_search(scorer, enc, beam=4, context_graph=g))
    assert any(h.context_score != 0 for h in offline)
    st = BeamState(scorer.context_size, g)
    for s in range(0, enc.shape[0], 7):
        st = modified_beam_search(scorer, enc[s : s + 7], beam=4, state=st)
    streamed = nbest(st)
    assert streamed == offline  # dataclass equality: tokens, log_prob, frames, scores, context


def test_nbest_finalize_does_not_mutate_beam():
    scorer, enc = TableScorer(6), ambiguous_frames()
    g = ContextGraph.build([[1, 2, 5]], boost=1.0)  # 1 2 is spelt, 5 never comes
    st = modified_beam_search(scorer, enc, beam=4, context_graph=g)
    before = [(h.tokens, h.log_prob, h.context_score, h.context_state) for h in st.hyps]
    raw = nbest(st, finalize_context=False)
    final = nbest(st)
    assert [(h.tokens, h.log_prob, h.context_score, h.context_state) for h in st.hyps] == before
    assert raw[0].tokens == [1, 2] and raw[0].context_score == 2.0
    assert {tuple(h.tokens): h.context_score for h in final}[(1, 2)] == 0.0
    assert final[0].tokens == [3, 4]  # the partial credit no longer outranks the acoustics
    assert len(nbest(st, 2)) == 2


def test_context_belongs_to_the_beam_state():
    scorer, enc = TableScorer(6), ambiguous_frames()
    g1 = ContextGraph.build([[1, 2]], boost=1.0)
    g2 = ContextGraph.build([[3, 4]], boost=1.0)
    st = modified_beam_search(scorer, enc[:1], beam=4, context_graph=g1)
    st = modified_beam_search(scorer, enc[1:], beam=4, state=st)  # keeps g1
    assert st.context_graph is g1 and nbest(st)[0].tokens == [1, 2]
    with pytest.raises(ValueError, match="BeamState"):
        modified_beam_search(scorer, enc, beam=4, state=st, context_graph=g2)
    # a new utterance with another context: a new state
    st2 = modified_beam_search(scorer, enc, beam=4, state=BeamState(1, g2))
    assert nbest(st2)[0].tokens == [3, 4] and nbest(st2)[0].context_score == 2.0
    with pytest.raises(ValueError, match="vocabulary"):
        modified_beam_search(scorer, enc, context_graph=ContextGraph.build([[6]]))


# ------------------------------------------------------------------------------------------------
# without a graph: exactly the previous search
# ------------------------------------------------------------------------------------------------


def _reference_search(scorer, enc, beam, blank_penalty):
    """A copy of modified_beam_search as it was before contextual biasing."""

    def ctx(tokens, size):
        c = tokens[-size:]
        return [BLANK_ID] * (size - len(c)) + c

    def log_softmax(x):
        m = x.max(axis=-1, keepdims=True)
        y = x - m
        return y - np.log(np.exp(y).sum(axis=-1, keepdims=True))

    hyps = [Hypothesis([], 0.0)]
    for t in range(enc.shape[0]):
        dec = scorer.decoder(np.array([ctx(h.tokens, scorer.context_size) for h in hyps]))
        logits = scorer.joiner(np.repeat(enc[t : t + 1], len(hyps), axis=0), dec)
        if blank_penalty:
            logits = logits.copy()
            logits[:, BLANK_ID] -= blank_penalty
        lp = log_softmax(logits)
        flat = (lp + np.array([h.log_prob for h in hyps])[:, None]).reshape(-1)
        k = min(beam * 2, flat.size)
        top = np.argpartition(-flat, k - 1)[:k]
        top = top[np.argsort(-flat[top])]
        merged: dict = {}
        V = lp.shape[1]
        for idx in top:
            h_i, tok = divmod(int(idx), V)
            h = hyps[h_i]
            s = float(flat[idx])
            if tok == BLANK_ID:
                new = Hypothesis(h.tokens, s, h.frames, h.scores)
            else:
                new = Hypothesis(h.tokens + [tok], s, h.frames + [t], h.scores + [s])
            key = tuple(new.tokens)
            if key in merged:
                merged[key].log_prob = float(np.logaddexp(merged[key].log_prob, s))
            else:
                merged[key] = new
        hyps = sorted(merged.values(), key=lambda h: -h.log_prob)[:beam]
    return sorted(hyps, key=lambda h: -h.log_prob)


@pytest.mark.parametrize("seed,beam,blank_penalty", [(0, 4, 0.0), (1, 2, 0.5), (2, 6, 0.0)])
def test_no_context_is_bit_identical_to_previous_search(seed, beam, blank_penalty):
    scorer = RandomScorer(seed=seed)
    enc = np.random.default_rng(seed + 10).standard_normal((50, 8)).astype(np.float32)
    ref = _reference_search(scorer, enc, beam, blank_penalty)
    got = nbest(modified_beam_search(scorer, enc, beam=beam, blank_penalty=blank_penalty))
    empty = nbest(
        modified_beam_search(
            scorer,
            enc,
            beam=beam,
            blank_penalty=blank_penalty,
            context_graph=ContextGraph.build([]),
        )
    )
    for hyps in (got, empty):
        assert [(h.tokens, h.log_prob, h.frames, h.scores) for h in hyps] == [
            (h.tokens, h.log_prob, h.frames, h.scores) for h in ref
        ]
    assert all(h.context_state is None and h.context_score == 0.0 for h in got)


def test_beam_history_is_predictor_context_only():
    """A state started with ``history`` (the tokens of the utterance an end-pointer just closed)
    feeds them to the predictor until its hypotheses have tokens of their own, and never puts
    them in a hypothesis."""

    class Recording(RandomScorer):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[list[list[int]]] = []

        def decoder(self, contexts: np.ndarray) -> np.ndarray:
            self.calls.append(contexts.tolist())
            return super().decoder(contexts)

    enc = 3.0 * np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    sc = Recording()
    st = modified_beam_search(sc, enc[:1], 4, BeamState(2, history=[5, 7, 9]))
    assert sc.calls == [[[7, 9]]] and st.history == [7, 9]
    grown = [h for h in st.hyps if h.tokens]
    assert grown and all(len(h.tokens) == len(h.frames) == 1 for h in grown)
    expected = [[9, h.tokens[0]] if h.tokens else [7, 9] for h in st.hyps]
    modified_beam_search(sc, enc[1:], 4, st)
    assert sorted(sc.calls[1]) == sorted(expected)
    # without history the first context is all blanks, as before
    fresh = Recording()
    modified_beam_search(fresh, enc[:1], 4)
    assert fresh.calls == [[[BLANK_ID, BLANK_ID]]]
