"""N-best word lattices: building, sharing, scores, posteriors and the checked JSON form."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest

from edgeasr.lattice import Lattice, LatticeError, build_lattice, check_lattice
from edgeasr.lattice.io import checksum, load_schema
from edgeasr.search.beam import Hypothesis
from edgeasr.tokenizer import train_tokenizer

FS = 0.04  # frame shift (s)
SPACING = 12  # frames between word starts in hand-made hypotheses

TEXTS = """turn on the light
turn off the light
turn on the lights
switch on the kitchen light
switch off the kitchen lights
play some music by the beatles
call mom on her cell phone
set a timer for ten minutes
what is the weather in paris
open the garage door please
close the front door
lock the back door
dim the bedroom lights
read my new messages
add milk to the shopping list
remind me to call dad at noon
how cold is it outside
start the vacuum cleaner
stop the music
skip this song
play the next episode
turn the volume up
turn the volume down
call the office
send a text to anna
navigate to the airport
what time is it in tokyo
set an alarm for seven
cancel my alarm
is it going to rain today""".splitlines()


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS * 5, vocab_size=60)


def make_hyp(tok, words: list[tuple[str, float]], tail: float, frame0: int = 0) -> Hypothesis:
    """A hypothesis with word i starting at frame frame0 + 12 i, one token per frame.

    Each word's score is spread over its tokens; ``tail`` (trailing blanks / merged mass) makes
    log_prob differ from the last cumulative score, as it does in real beam search.
    """
    tokens: list[int] = []
    frames: list[int] = []
    scores: list[float] = []
    total = 0.0
    for i, (word, am) in enumerate(words):
        ids = tok.encode(word)
        assert len(ids) < SPACING
        base = total
        for j, t in enumerate(ids):
            tokens.append(t)
            frames.append(frame0 + SPACING * i + j)
            scores.append(base + am * (j + 1) / len(ids))
        total = scores[-1]
    return Hypothesis(tokens, total + tail, frames, scores)


def token_prior(tokens: list[int]) -> list[float]:
    """A deterministic stand-in for the internal LM: the same token always gets the same prior."""
    return [-0.05 - 0.1 * (t % 7) for t in tokens]


def nbest3(tok) -> list[Hypothesis]:
    # the shared words ("the light") have identical times and scores in all three hypotheses
    return [
        make_hyp(tok, [("turn", -1.0), ("on", -0.5), ("the", -0.3), ("light", -0.7)], -0.1),
        make_hyp(tok, [("turn", -1.0), ("off", -1.5), ("the", -0.3), ("light", -0.7)], -0.1),
        make_hyp(tok, [("switch", -2.5), ("on", -0.5), ("the", -0.3), ("light", -0.7)], -0.1),
    ]


@pytest.fixture()
def lat(tok) -> Lattice:
    return build_lattice(nbest3(tok), tok, FS, prior=token_prior)


def softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [x / sum(e) for x in e]


# ---------------------------------------------------------------------------------------------
# building


def test_every_hypothesis_is_a_path_with_its_exact_score(tok, lat):
    hyps = nbest3(tok)
    by_text = {tok.decode(h.tokens): h for h in hyps}
    assert [h.text for h in lat.nbest] == [
        "turn on the light",
        "turn off the light",
        "switch on the light",
    ]
    for entry in lat.nbest:
        h = by_text[entry.text]
        assert entry.log_prob == h.log_prob
        edges = [lat.edges[k] for k in entry.path]
        assert edges[0].src == lat.start
        assert all(a.dst == b.src for a, b in zip(edges, edges[1:], strict=False))
        final = lat.finals[edges[-1].dst]
        assert abs(sum(e.am for e in edges) + final - h.log_prob) < 1e-9
        assert abs(final - (h.log_prob - h.scores[-1])) < 1e-9
        # prior is the per-token prior summed per word, and over the path it is the token total
        assert abs(sum(e.prior for e in edges) - sum(token_prior(h.tokens))) < 1e-9
        assert [e.word for e in edges] == entry.text.split()
    # the graph holds exactly the N-best: sharing adds no paths
    paths = lat.paths()
    assert [(p.text, round(p.score, 9)) for p in paths] == [
        (e.text, round(e.log_prob, 9)) for e in lat.nbest
    ]
    best = lat.best_path()
    assert best.text == "turn on the light"
    assert abs(best.score - hyps[0].log_prob) < 1e-9


def test_word_times_and_scores(tok, lat):
    h = nbest3(tok)[0]
    edges = [lat.edges[k] for k in lat.nbest[0].path]
    ends, prev = [], 0.0
    k = 0
    for i, e in enumerate(edges):
        n = len(tok.encode(e.word))
        assert e.start == pytest.approx(SPACING * i * FS)
        assert e.end == pytest.approx((SPACING * i + n) * FS)
        k += n
        assert e.am == pytest.approx(h.scores[k - 1] - prev, abs=1e-12)
        prev = h.scores[k - 1]
        ends.append(e.end)
    assert lat.nodes[lat.start].time == 0.0
    assert all(lat.nodes[e.dst].time <= e.end for e in lat.edges)


def test_prefix_and_suffix_sharing_reduce_edges(tok, lat):
    hyps = nbest3(tok)
    n_words = sum(len(tok.decode(h.tokens).split()) for h in hyps)
    trie = build_lattice(hyps, tok, FS, prior=token_prior, minimise=False)
    assert n_words == 12
    assert len(trie.edges) == 11  # "turn" shared by two hypotheses
    # "the light" after "turn on", "turn off" and "switch on" is one sub-graph
    assert len(lat.edges) == 7
    assert len(lat.nodes) == 6
    assert sorted(e.word for e in lat.edges) == sorted(
        ["turn", "switch", "on", "off", "on", "the", "light"]
    )
    assert len(lat.finals) == 1
    # both forms hold the same paths with the same scores
    assert [(p.text, round(p.score, 9)) for p in trie.paths()] == [
        (p.text, round(p.score, 9)) for p in lat.paths()
    ]


def test_no_sharing_when_scores_or_times_differ(tok):
    a = make_hyp(tok, [("turn", -1.0), ("on", -0.5)], -0.1)
    b = make_hyp(tok, [("turn", -1.2), ("off", -0.5)], -0.1)  # same first word, other score
    c = make_hyp(tok, [("turn", -1.0), ("on", -0.5)], -0.1, frame0=3)  # same words, later
    lat = build_lattice([a, b, c], tok, FS)
    assert len(lat.edges) == 6
    assert len(lat.paths()) == 3
    for entry in lat.nbest:
        path = [lat.edges[k] for k in entry.path]
        total = sum(e.am for e in path) + lat.finals[path[-1].dst]
        assert abs(total - entry.log_prob) < 1e-9


def test_suffix_sharing_tolerates_rounding_noise(tok):
    # the same per-word scores reached from different cumulative totals differ by ulps
    a = make_hyp(tok, [("call", -0.1), ("the", -0.7), ("office", -0.3)], -0.2)
    b = make_hyp(tok, [("set", -2.3), ("the", -0.7), ("office", -0.3)], -0.2)
    the_a = a.scores[len(tok.encode("call the")) - 1] - a.scores[len(tok.encode("call")) - 1]
    the_b = b.scores[len(tok.encode("set the")) - 1] - b.scores[len(tok.encode("set")) - 1]
    assert the_a != the_b  # not bit-identical ...
    lat = build_lattice([a, b], tok, FS)
    assert len(lat.edges) == 4  # ... but shared
    for entry, h in zip(lat.nbest, sorted([a, b], key=lambda h: -h.log_prob), strict=True):
        path = [lat.edges[k] for k in entry.path]
        assert abs(sum(e.am for e in path) + lat.finals[path[-1].dst] - h.log_prob) < 1e-9


def test_posteriors_are_nbest_probabilities(tok, lat):
    hyps = nbest3(tok)
    p = softmax([h.log_prob for h in hyps])  # best first, as in lat.nbest
    words = {e.id: e for e in lat.edges}
    best = [words[k] for k in lat.nbest[0].path]
    assert [e.word for e in best] == ["turn", "on", "the", "light"]
    assert best[0].posterior == pytest.approx(p[0] + p[1])  # "turn" is shared with "turn off"
    assert best[1].posterior == pytest.approx(p[0])  # this "on" follows "turn" only
    assert best[2].posterior == pytest.approx(1.0)
    assert best[3].posterior == pytest.approx(1.0)
    assert [w.word for w in lat.words] == ["turn", "on", "the", "light"]
    assert [w.confidence for w in lat.words] == [e.posterior for e in best]
    assert [(w.start, w.end) for w in lat.words] == [(e.start, e.end) for e in best]
    assert all(0.0 <= e.posterior <= 1.0 for e in lat.edges)


def test_posteriors_follow_the_ranking_scores_when_given(tok):
    """A second pass that puts "switch on the light" first: its words' confidences come from
    the scores that ranked it, while every path keeps its transducer log-probability."""
    turn_on, turn_off, switch_on = nbest3(tok)
    hyps = [switch_on, turn_on, turn_off]  # the second pass' order
    ranks = [-1.0, -3.0, -4.0]
    lat = build_lattice(hyps, tok, FS, keep_order=True, rank_scores=ranks)
    p = softmax(ranks)
    assert lat.nbest[0].text == "switch on the light"
    assert lat.nbest[0].log_prob == pytest.approx(switch_on.log_prob)
    assert [w.confidence for w in lat.words] == pytest.approx([p[0], p[0], 1.0, 1.0])
    plain = build_lattice(hyps, tok, FS, keep_order=True)  # by log_prob it is the least likely
    assert plain.words[0].confidence == pytest.approx(softmax([h.log_prob for h in hyps])[0])
    assert plain.words[0].confidence < 0.2 < lat.words[0].confidence
    # unordered: the paths are sorted by log_prob and each keeps its own rank score
    resorted = build_lattice(hyps, tok, FS, rank_scores=ranks)
    assert resorted.nbest[0].text == "turn on the light"
    assert resorted.words[0].confidence == pytest.approx(p[1] + p[2])
    with pytest.raises(LatticeError, match="one finite rank score per hypothesis"):
        build_lattice(hyps, tok, FS, rank_scores=ranks[:2])
    with pytest.raises(LatticeError, match="one finite rank score per hypothesis"):
        build_lattice(hyps, tok, FS, rank_scores=[0.0, math.inf, 0.0])


def test_lone_boundary_piece_joins_the_next_word(tok):
    # this tokenizer spells "kitchen" as "▁" + "k" + ...: still one word, timed from the "▁"
    assert tok.id_to_piece(tok.encode("kitchen")[0]) == "\u2581"
    h = make_hyp(tok, [("switch", -1.0), ("kitchen", -2.0)], -0.3)
    lat = build_lattice([h], tok, FS)
    assert [e.word for e in lat.best_path().edges] == ["switch", "kitchen"]
    assert lat.edges[1].start == pytest.approx(SPACING * FS)
    assert lat.nbest[0].text == "switch kitchen"


def test_empty_hypothesis(tok):
    empty = Hypothesis([], -0.4)
    lat = build_lattice([empty, make_hyp(tok, [("stop", -2.0)], -0.1)], tok, FS)
    assert lat.nbest[0].text == "" and lat.nbest[0].path == ()
    assert lat.finals[lat.start] == pytest.approx(-0.4)
    assert lat.words == []
    assert lat.best_path().edges == ()
    assert lat.best_path().score == pytest.approx(-0.4)
    assert Lattice.from_json(lat.to_json()) == lat
    only = build_lattice([empty], tok, FS)
    assert only.edges == [] and len(only.nodes) == 1 and only.finals == {only.start: -0.4}
    assert Lattice.from_json(only.to_json()) == only


def test_build_rejects_inconsistent_hypotheses(tok):
    good = make_hyp(tok, [("stop", -2.0)], -0.1)
    with pytest.raises(LatticeError, match="no hypotheses"):
        build_lattice([], tok, FS)
    with pytest.raises(LatticeError, match="frame_shift_s"):
        build_lattice([good], tok, 0.0)
    with pytest.raises(LatticeError, match="hypothesis 0 has 2 tokens but 1 frames"):
        build_lattice([Hypothesis(good.tokens[:1] * 2, -1.0, [0], [-1.0])], tok, FS)
    with pytest.raises(LatticeError, match="blank"):
        build_lattice([Hypothesis([0], -1.0, [0], [-1.0])], tok, FS)
    with pytest.raises(LatticeError, match="non-finite log_prob"):
        build_lattice([Hypothesis([], math.nan)], tok, FS)
    with pytest.raises(LatticeError, match="prior gave 0 values"):
        build_lattice([good], tok, FS, prior=lambda t: [])


def test_real_beam_search_output(tok):
    """Hypotheses from modified beam search with a random scorer: pieces are arbitrary."""
    from edgeasr.search.beam import modified_beam_search, nbest

    rng = np.random.default_rng(0)
    V, J = tok.vocab_size, 8
    emb = rng.normal(size=(V, J)).astype(np.float32)
    out = rng.normal(size=(J, V)).astype(np.float32) * 2.0

    class RandomScorer:
        context_size = 2

        def decoder(self, contexts: np.ndarray) -> np.ndarray:
            return emb[contexts].sum(axis=1)

        def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
            logits = np.tanh(enc + dec) @ out
            logits[:, 0] += 1.0
            return logits

    enc = rng.normal(size=(40, J)).astype(np.float32)
    hyps = nbest(modified_beam_search(RandomScorer(), enc, beam=6))
    lat = build_lattice(hyps, tok, FS, prior=token_prior)
    assert len(lat.nbest) == len(hyps)
    for entry, h in zip(lat.nbest, hyps, strict=True):
        assert entry.log_prob == h.log_prob
        path = [lat.edges[k] for k in entry.path]
        end = path[-1].dst if path else lat.start
        assert abs(sum(e.am for e in path) + lat.finals[end] - h.log_prob) < 1e-9
    assert abs(sum(softmax([h.log_prob for h in hyps])) - 1.0) < 1e-12
    assert lat.best_path().score == pytest.approx(hyps[0].log_prob, abs=1e-9)
    assert Lattice.from_json(lat.to_json()) == lat


# ---------------------------------------------------------------------------------------------
# JSON


def test_round_trip(lat):
    text = lat.to_json()
    obj = json.loads(text)
    assert obj["format"] == "edgeasr-lattice" and obj["version"] == 1
    assert obj["sha256"] == checksum(obj)
    back = Lattice.from_json(text)
    assert back == lat
    assert Lattice.from_json(text.encode("utf-8")) == lat
    assert back.to_json() == text


def test_schema_is_valid_draft_2020_12():
    import jsonschema

    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def edit(text: str, fn, rehash: bool = True) -> str:
    """Apply ``fn`` to the parsed object and re-serialise, recomputing the checksum if asked."""
    obj = json.loads(text)
    fn(obj)
    if rehash:
        obj["sha256"] = checksum(obj)
    return json.dumps(obj)


def set_path(keys, value):
    def fn(obj):
        target = obj
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return fn


def add_back_edge(obj):
    last = obj["edges"][-1]
    obj["edges"].append({**last, "id": len(obj["edges"]), "src": last["dst"], "dst": 1})


def bad_cases(text: str) -> list[tuple[str, str | bytes, str]]:
    obj = json.loads(text)
    e3 = obj["edges"][3]
    return [
        ("flipped character", text.replace('"light"', '"lighT"', 1), "checksum mismatch"),
        (
            "changed score",
            edit(text, set_path(["edges", 0, "am"], obj["edges"][0]["am"] + 0.25)),
            "nbest 0 does not add up",
        ),
        ("missing key", edit(text, lambda o: o.pop("nodes")), "'nodes' is a required property"),
        ("missing edge key", edit(text, lambda o: o["edges"][2].pop("am")), "edges/2"),
        ("wrong version", edit(text, set_path(["version"], 2)), "unsupported version 2"),
        ("version bool", edit(text, set_path(["version"], True)), "unsupported version True"),
        ("wrong format", edit(text, set_path(["format"], "kaldi")), "not an edgeasr lattice"),
        ("no format", edit(text, lambda o: o.pop("format")), "missing 'format'"),
        ("stale checksum", edit(text, set_path(["start"], 1), rehash=False), "checksum mismatch"),
        ("no checksum", edit(text, lambda o: o.pop("sha256"), rehash=False), "missing 'sha256'"),
        (
            "dangling edge",
            edit(text, set_path(["edges", 3, "dst"], 99)),
            "edge 3 points to missing node 99",
        ),
        ("cycle", edit(text, add_back_edge), "cycle"),
        ("NaN", text.replace(f'"am":{e3["am"]!r}', '"am":NaN', 1), "non-finite number NaN"),
        ("Infinity", text.replace(f'"am":{e3["am"]!r}', '"am":-Infinity', 1), "Infinity"),
        ("huge", text.replace(f'"am":{e3["am"]!r}', '"am":-1e999', 1), "out of range"),
        ("truncated", text[: len(text) // 2], "not valid JSON"),
        ("empty", "", "not valid JSON"),
        ("non-JSON bytes", b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not UTF-8"),
        ("non-JSON text", "<html>lattice</html>", "not valid JSON"),
        ("array", "[1, 2]", "expected a JSON object"),
        (
            "negative duration",
            edit(text, set_path(["edges", 2, "start"], e3["end"] + 1.0)),
            "edge 2 has negative duration",
        ),
        (
            "negative time",
            edit(text, set_path(["edges", 2, "start"], -0.5)),
            "schema violation at edges/2/start",
        ),
        ("posterior", edit(text, set_path(["edges", 1, "posterior"], 1.5)), "edges/1/posterior"),
        ("extra key", edit(text, set_path(["comment"], "hi")), "schema violation"),
        ("string score", edit(text, set_path(["edges", 0, "am"], "-1")), "edges/0/am"),
        ("duplicate node id", edit(text, set_path(["nodes", 1, "id"], 0)), "duplicate node id 0"),
        ("gap in edge ids", edit(text, set_path(["edges", 0, "id"], 50)), "edge ids must be 0"),
        (
            "dead end",
            edit(text, lambda o: o["finals"].clear() or o["finals"].append(o_final(o))),
            "does not lie on a path",
        ),
        (
            "broken nbest path",
            edit(text, lambda o: o["nbest"][0]["path"].reverse()),
            "nbest 0 path is broken",
        ),
        (
            "nbest text",
            edit(text, set_path(["nbest", 1, "text"], "turn it off")),
            "nbest 1 text 'turn it off' does not match",
        ),
        (
            "duplicate key",
            text.replace('{"format"', '{"start":0,"format"', 1),
            "duplicate key 'start'",
        ),
        (
            "words",
            edit(text, set_path(["words", 0, "word"], "burn")),
            "words do not match",
        ),
    ]


def o_final(obj):
    """A final on the node after the first edge only: edges beyond it lead nowhere."""
    return {"node": obj["edges"][0]["dst"], "weight": -1.0}


@pytest.mark.parametrize("case", range(32))
def test_reader_rejects(lat, case):
    cases = bad_cases(lat.to_json())
    assert len(cases) == 32
    name, bad, message = cases[case]
    with pytest.raises(LatticeError, match=message.replace("(", r"\(")) as info:
        Lattice.from_json(bad)
    assert isinstance(info.value, ValueError), name
    assert str(info.value).startswith("lattice: "), name


def test_reader_rejects_non_text(lat):
    with pytest.raises(LatticeError, match="expected JSON text"):
        Lattice.from_json(None)  # type: ignore[arg-type]


def test_random_single_character_edits_never_leak(lat):
    """Any one-character change is refused with LatticeError (or reads back the same lattice)."""
    text = lat.to_json()
    rng = random.Random(0)
    alphabet = '0123456789.-+eE",:{}[]abcdefghijklmnopqrstuvwxyz N'
    for _ in range(300):
        i = rng.randrange(len(text))
        c = rng.choice([a for a in alphabet if a != text[i]])
        try:
            back = Lattice.from_json(text[:i] + c + text[i + 1 :])
        except LatticeError:
            continue
        assert back == lat


def test_writer_refuses_non_finite_scores(lat):
    from dataclasses import replace

    bad = replace(lat, edges=[replace(lat.edges[0], am=math.nan), *lat.edges[1:]])
    with pytest.raises(LatticeError, match="edge 0 has a non-finite am"):
        bad.to_json()
    with pytest.raises(LatticeError, match="non-finite am"):
        check_lattice(bad)


def test_import_needs_neither_torch_nor_jsonschema():
    code = (
        "import sys, edgeasr.lattice\n"
        "bad = [m for m in ('torch', 'jsonschema', 'numpy') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


class FakeVocab:
    """Pieces by id, to spell the same word with different tokens."""

    pieces = ["<blk>", "<unk>", "\u2581turn", "\u2581", "t", "urn", "\u2581on"]

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]


def test_same_words_from_different_tokens_stay_separate_paths():
    # "▁turn" and "▁" "t" "urn" give the same word, times and am but different final weights:
    # one node cannot hold two final weights, so the second gets its own parallel edge
    a = Hypothesis([2], -1.1, [0], [-1.0])
    b = Hypothesis([3, 4, 5], -1.5, [0, 0, 0], [-0.2, -0.6, -1.0])
    c = Hypothesis([3, 4, 5, 6], -2.5, [0, 0, 0, 5], [-0.2, -0.6, -1.0, -2.0])
    lat = build_lattice([a, b, c], FakeVocab(), FS)
    assert [h.text for h in lat.nbest] == ["turn", "turn", "turn on"]
    assert len({h.path for h in lat.nbest}) == 3
    for entry, h in zip(lat.nbest, [a, b, c], strict=True):
        path = [lat.edges[k] for k in entry.path]
        assert abs(sum(e.am for e in path) + lat.finals[path[-1].dst] - h.log_prob) < 1e-9
    assert sorted(round(p.score, 9) for p in lat.paths()) == [-2.5, -1.5, -1.1]
    assert Lattice.from_json(lat.to_json()) == lat


def test_wordless_hypotheses_are_one_transcript():
    empty = Hypothesis([], -1.0)
    boundary_only = Hypothesis([3], -2.0, [4], [-1.5])  # a lone "▁" makes no word
    lat = build_lattice([empty, boundary_only], FakeVocab(), FS)
    assert len(lat.nbest) == 1 and lat.nbest[0].text == ""
    assert lat.nbest[0].log_prob == pytest.approx(math.log(math.exp(-1.0) + math.exp(-2.0)))
    assert lat.finals == {lat.start: lat.nbest[0].log_prob}
    # their rank scores merge the same way: together they outweigh "turn" at -1.2
    turn = Hypothesis([2], -0.5, [0], [-0.4])
    lat = build_lattice(
        [turn, empty, boundary_only], FakeVocab(), FS, rank_scores=[-1.2, -1.0, -2.0]
    )
    merged = math.log(math.exp(-1.0) + math.exp(-2.0))
    assert [e.text for e in lat.nbest] == ["turn", ""]
    assert lat.edges[0].posterior == pytest.approx(softmax([-1.2, merged])[0])


def test_prefix_sharing_within_tolerance_keeps_exact_scores():
    a = Hypothesis([2, 6], -2.0, [0, 5], [-1.0, -1.9])
    b = Hypothesis([2], -2.5, [0], [-1.0 + 4e-10])  # "turn" scored 4e-10 differently: shared
    lat = build_lattice([a, b], FakeVocab(), FS, minimise=False)
    assert len(lat.edges) == 2
    for entry, h in zip(lat.nbest, [a, b], strict=True):
        path = [lat.edges[k] for k in entry.path]
        assert abs(sum(e.am for e in path) + lat.finals[path[-1].dst] - h.log_prob) < 1e-12
