"""N-best word lattices: the data classes and how to build them from beam search results.

The device sends a lattice, not audio, to the cloud rescorer. The rescorer needs, per word, the
acoustic score (``am``) and the model's internal LM estimate (``prior``) so it can subtract the
prior and add its own LM, and it needs every N-best hypothesis as a path whose scores add up to
that hypothesis' log-probability exactly, otherwise reranking would be biased by bookkeeping.

Building is two steps on a word graph:

1. a prefix tree over the N-best (hypotheses share a leading edge only when word, times and
   scores agree, so sharing never changes a path's score), then
2. minimisation of that acyclic graph (nodes whose outgoing sub-graphs are identical in words,
   times, scores and final weights are merged), which shares common suffixes.

Merging states with identical futures keeps the set of complete paths unchanged, so the graph
holds exactly the N-best, just compactly. Only the standard library is used: the device imports
this module.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

WORD_BOUNDARY = "\u2581"
"""Sentencepiece's word-start marker: a piece beginning with it starts a new word."""

PREFIX_TOL = 1e-9
"""Two hypotheses share a prefix edge only if its am (and prior) agree to within this."""

SUFFIX_QUANTUM = 1e-11
"""Scores are compared on this grid when merging suffixes.

Per-word scores are differences of cumulative sums, so the same word scored in the same context
differs between hypotheses by a few ulps. Comparing exactly would never share a real suffix;
comparing on a 1e-11 grid shares them while keeping every path total within 1e-9 of its
hypothesis for up to ~100 words.
"""


class LatticeError(ValueError):
    """Anything wrong with a lattice or its inputs; the message names what and where."""


class HypothesisLike(Protocol):
    """What the builder reads from a search result (``edgeasr.search.beam.Hypothesis``).

    A protocol rather than an import keeps this module free of numpy and sentencepiece.
    """

    @property
    def tokens(self) -> Sequence[int]: ...

    @property
    def log_prob(self) -> float: ...

    @property
    def frames(self) -> Sequence[int]: ...

    @property
    def scores(self) -> Sequence[float]: ...


class PieceVocab(Protocol):
    """What the builder needs from a tokenizer (``edgeasr.tokenizer.Tokenizer``)."""

    def id_to_piece(self, i: int) -> str: ...


PriorFn = Callable[[list[int]], Sequence[float]]
"""Per-token prior log-probabilities (internal LM estimate) for a token sequence."""


@dataclass(frozen=True)
class Node:
    """A lattice state. ``time`` is the earliest end time of the words arriving here (0 for start).

    Edges carry their own times, so node times are informative only; after suffix merging the
    words reaching one node may end at different times.
    """

    id: int
    time: float


@dataclass(frozen=True)
class Edge:
    """One word hypothesis between two nodes.

    ``am`` is the transducer's log-probability for the word (everything accumulated since the
    previous word), ``prior`` the summed internal-LM log-prior of its tokens, ``posterior`` the
    N-best probability mass of the hypotheses through this edge (the word confidence).
    """

    id: int
    src: int
    dst: int
    word: str
    start: float
    end: float
    am: float
    prior: float
    posterior: float


@dataclass(frozen=True)
class NBestEntry:
    """One N-best hypothesis: its words joined by spaces, its log-probability, its edge ids."""

    text: str
    log_prob: float
    path: tuple[int, ...]


@dataclass(frozen=True)
class WordResult:
    """A word of the best hypothesis with its timing and confidence (edge posterior)."""

    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class LatticePath:
    """A complete start-to-final path; ``score`` is the sum of edge ``am`` plus the final weight."""

    edges: tuple[Edge, ...]
    score: float

    @property
    def words(self) -> list[str]:
        return [e.word for e in self.edges]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def prior(self) -> float:
        return math.fsum(e.prior for e in self.edges)


@dataclass
class Lattice:
    """A word lattice over an utterance's N-best, ready to serialise for cloud rescoring.

    ``finals`` maps final nodes to their final weight (trailing blanks and merged beam mass).
    ``nbest`` keeps the hypotheses best first with their paths so the rescorer need not search;
    ``words`` is the best hypothesis word by word with confidences, for the device's own result.
    """

    nodes: list[Node]
    edges: list[Edge]
    start: int
    finals: dict[int, float]
    nbest: list[NBestEntry]
    words: list[WordResult]
    frame_shift_s: float

    def validate(self) -> None:
        """Raise :class:`LatticeError` unless the lattice is self-consistent (see ``io``)."""
        from edgeasr.lattice.io import check_lattice

        check_lattice(self)

    def best_path(self) -> LatticePath:
        """The highest-scoring complete path by am + final weight (Viterbi over the DAG)."""
        order = topological_order(len(self.nodes), [(e.src, e.dst) for e in self.edges])
        if order is None:
            raise LatticeError("lattice: graph has a cycle")
        out: dict[int, list[Edge]] = {n.id: [] for n in self.nodes}
        for e in self.edges:
            out[e.src].append(e)
        best: dict[int, tuple[float, Edge | None]] = {self.start: (0.0, None)}
        for n in order:
            if n not in best:
                continue
            score = best[n][0]
            for e in out[n]:
                cand = score + e.am
                if e.dst not in best or cand > best[e.dst][0]:
                    best[e.dst] = (cand, e)
        reached = [(best[n][0] + w, n) for n, w in self.finals.items() if n in best]
        if not reached:
            raise LatticeError("lattice: no final node is reachable from the start node")
        _, node = max(reached, key=lambda t: t[0])
        edges: list[Edge] = []
        while (back := best[node][1]) is not None:
            edges.append(back)
            node = back.src
        edges.reverse()
        end = edges[-1].dst if edges else self.start
        return LatticePath(tuple(edges), math.fsum([*(e.am for e in edges), self.finals[end]]))

    def paths(self, max_paths: int = 10_000) -> list[LatticePath]:
        """All complete paths, best first. Meant for small lattices: refuses more than max_paths."""
        order = topological_order(len(self.nodes), [(e.src, e.dst) for e in self.edges])
        if order is None:
            raise LatticeError("lattice: graph has a cycle")
        out: dict[int, list[Edge]] = {n.id: [] for n in self.nodes}
        for e in self.edges:
            out[e.src].append(e)
        # count paths first so a large lattice fails fast instead of exhausting memory
        count: dict[int, int] = {}
        for n in reversed(order):
            count[n] = (1 if n in self.finals else 0) + sum(count[e.dst] for e in out[n])
        if count.get(self.start, 0) > max_paths:
            raise LatticeError(
                f"lattice: {count[self.start]} paths exceed max_paths={max_paths}; "
                "use best_path() or raise the limit"
            )
        result: list[LatticePath] = []

        def walk(node: int, prefix: list[Edge]) -> None:
            if node in self.finals:
                score = math.fsum([*(e.am for e in prefix), self.finals[node]])
                result.append(LatticePath(tuple(prefix), score))
            for e in out[node]:
                prefix.append(e)
                walk(e.dst, prefix)
                prefix.pop()

        walk(self.start, [])
        result.sort(key=lambda p: -p.score)
        return result

    def to_json(self) -> str:
        """The versioned, checksummed JSON form (see ``edgeasr.lattice.io``)."""
        from edgeasr.lattice.io import to_json

        return to_json(self)

    @classmethod
    def from_json(cls, text: str | bytes) -> Lattice:
        """Read and fully check a lattice; raises :class:`LatticeError` on anything wrong."""
        from edgeasr.lattice.io import from_json

        return from_json(text)


def topological_order(n_nodes: int, arcs: Sequence[tuple[int, int]]) -> list[int] | None:
    """Kahn's algorithm over node ids 0..n-1 (smallest id first); None if there is a cycle."""
    indeg = [0] * n_nodes
    out: list[list[int]] = [[] for _ in range(n_nodes)]
    for s, d in arcs:
        out[s].append(d)
        indeg[d] += 1
    ready = [n for n in range(n_nodes) if indeg[n] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        for d in out[n]:
            indeg[d] -= 1
            if indeg[d] == 0:
                heapq.heappush(ready, d)
    return order if len(order) == n_nodes else None


# ---------------------------------------------------------------------------------------------
# building


@dataclass(frozen=True)
class _Word:
    word: str
    start: float
    end: float
    am: float
    prior: float


@dataclass(frozen=True)
class _TEdge:
    src: int
    dst: int
    word: str
    start: float
    end: float
    am: float
    prior: float


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _words_of(
    hyp: HypothesisLike,
    index: int,
    vocab: PieceVocab,
    frame_shift_s: float,
    prior: PriorFn | None,
) -> list[_Word]:
    """Split a hypothesis into words with am/prior scores and times; checks its consistency."""
    tokens = [int(t) for t in hyp.tokens]
    frames = [int(f) for f in hyp.frames]
    scores = [float(s) for s in hyp.scores]
    n = len(tokens)
    where = f"lattice: hypothesis {index}"
    if len(frames) != n or len(scores) != n:
        raise LatticeError(
            f"{where} has {n} tokens but {len(frames)} frames and {len(scores)} scores"
        )
    if not _finite(float(hyp.log_prob)):
        raise LatticeError(f"{where} has a non-finite log_prob {hyp.log_prob!r}")
    for k in range(n):
        if tokens[k] == 0:
            raise LatticeError(f"{where} contains the blank id 0 at position {k}")
        if frames[k] < 0 or (k and frames[k] < frames[k - 1]):
            raise LatticeError(f"{where}: frames must be non-negative and non-decreasing ({k})")
        if not math.isfinite(scores[k]):
            raise LatticeError(f"{where} has a non-finite score at token {k}")
    token_prior = [0.0] * n
    if prior is not None and n:
        token_prior = [float(p) for p in prior(tokens)]
        if len(token_prior) != n:
            raise LatticeError(f"{where}: prior gave {len(token_prior)} values for {n} tokens")
        if not all(math.isfinite(p) for p in token_prior):
            raise LatticeError(f"{where}: prior gave a non-finite value")

    pieces = [vocab.id_to_piece(t) for t in tokens]
    groups: list[list[int]] = []
    for k, piece in enumerate(pieces):
        if not groups or piece.startswith(WORD_BOUNDARY):
            groups.append([k])
        else:
            groups[-1].append(k)

    def text(g: list[int]) -> str:
        return "".join(pieces[k] for k in g).replace(WORD_BOUNDARY, "")

    # A lone "▁" piece would make an empty word; fold it into the next word (or the last one).
    words_tok: list[list[int]] = []
    pending: list[int] = []
    for g in groups:
        if text(g):
            words_tok.append(pending + g)
            pending = []
        else:
            pending.extend(g)
    if pending and words_tok:
        words_tok[-1].extend(pending)
    # (only boundary pieces: no words; their score ends up in the final weight)

    out: list[_Word] = []
    prev = 0.0
    for g in words_tok:
        first, last = g[0], g[-1]
        out.append(
            _Word(
                word=text(g),
                start=frames[first] * frame_shift_s,
                end=(frames[last] + 1) * frame_shift_s,
                am=scores[last] - prev,
                prior=math.fsum(token_prior[k] for k in g),
            )
        )
        prev = scores[last]
    return out


class _Trie:
    """Prefix tree of word sequences; node ids grow from parent to child (a topological order)."""

    def __init__(self) -> None:
        self.children: list[list[int]] = [[]]
        self.edges: list[_TEdge] = []
        self.finals: dict[int, float] = {}

    def insert(self, words: list[_Word]) -> list[int]:
        node = 0
        path: list[int] = []
        for i, w in enumerate(words):
            last = i == len(words) - 1
            match = None
            for e in self.children[node]:
                t = self.edges[e]
                if (
                    t.word == w.word
                    and t.start == w.start
                    and t.end == w.end
                    and abs(t.am - w.am) <= PREFIX_TOL
                    and abs(t.prior - w.prior) <= PREFIX_TOL
                    # a node ends at most one hypothesis: it can hold only one final weight
                    and not (last and t.dst in self.finals)
                ):
                    match = e
                    break
            if match is None:
                dst = len(self.children)
                self.children.append([])
                match = len(self.edges)
                self.edges.append(_TEdge(node, dst, w.word, w.start, w.end, w.am, w.prior))
                self.children[node].append(match)
            path.append(match)
            node = self.edges[match].dst
        return path


def _q(x: float) -> int:
    return round(x / SUFFIX_QUANTUM)


def _minimise(trie: _Trie) -> list[int]:
    """Map each trie node to a representative with an identical future (suffix sharing)."""
    canon = list(range(len(trie.children)))
    registry: dict[tuple, int] = {}
    for n in reversed(range(len(trie.children))):  # children before parents
        out = tuple(
            sorted(
                (t.word, t.start, t.end, _q(t.am), _q(t.prior), canon[t.dst])
                for t in (trie.edges[e] for e in trie.children[n])
            )
        )
        final = _q(trie.finals[n]) if n in trie.finals else None
        canon[n] = registry.setdefault((final, out), n)
    return canon


def _logaddexp(a: float, b: float) -> float:
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def _softmax(log_probs: Sequence[float]) -> list[float]:
    m = max(log_probs)
    w = [math.exp(lp - m) for lp in log_probs]
    z = math.fsum(w)
    return [x / z for x in w]


def build_lattice(
    hyps: Sequence[HypothesisLike],
    tokenizer: PieceVocab,
    frame_shift_s: float,
    prior: PriorFn | None = None,
    *,
    minimise: bool = True,
    keep_order: bool = False,
    rank_scores: Sequence[float] | None = None,
) -> Lattice:
    """Build the word lattice of an N-best list (as returned by ``search.beam.nbest``).

    Each word edge gets ``am`` = the hypothesis' cumulative score at the word's last token minus
    that at the previous word's last token; what is left of ``log_prob`` (trailing blanks and
    probability merged in by the beam) becomes the final weight, so every hypothesis is a path
    whose am sum plus final weight equals its ``log_prob``. ``prior`` (optional) gives per-token
    internal-LM log-priors, summed per word. ``minimise=False`` skips suffix sharing (a plain
    prefix tree), which is mainly useful to measure what sharing saves. The N-best is ordered
    by ``log_prob`` unless ``keep_order``: then it keeps the caller's ranking, e.g. the search's
    order under context biasing, whose boosts are not part of ``log_prob``.

    The edge posteriors (word confidences) are the N-best's softmax over ``log_prob``, or over
    ``rank_scores`` (one per hypothesis, on a log-probability's scale) when the caller ranked by
    other scores, e.g. a second pass': the reported words' confidences then come from the
    ranking that chose them, not from the one it overruled.
    """
    if not _finite(frame_shift_s) or frame_shift_s <= 0:
        raise LatticeError(f"lattice: frame_shift_s must be a positive number, got {frame_shift_s}")
    if not hyps:
        raise LatticeError("lattice: no hypotheses to build from")
    if rank_scores is not None and (
        len(rank_scores) != len(hyps) or not all(_finite(float(s)) for s in rank_scores)
    ):
        raise LatticeError(
            f"lattice: need one finite rank score per hypothesis ({len(hyps)}), "
            f"got {list(rank_scores)}"
        )
    order = (
        list(range(len(hyps)))
        if keep_order
        else sorted(range(len(hyps)), key=lambda i: -float(hyps[i].log_prob))
    )

    trie = _Trie()
    entries: list[tuple[str, float, list[int]]] = []  # text, log_prob, trie edge path
    ranks: list[float] = []  # each entry's score for the posteriors
    empty_at: int | None = None
    for i in order:
        words = _words_of(hyps[i], i, tokenizer, frame_shift_s, prior)
        log_prob = float(hyps[i].log_prob)
        rank = log_prob if rank_scores is None else float(rank_scores[i])
        if not words and empty_at is not None:
            # Two word-less hypotheses (e.g. nothing vs a lone "▁") are one transcript: add
            # their probabilities, as the beam does for identical token sequences.
            text, old, path = entries[empty_at]
            merged = _logaddexp(old, log_prob)
            entries[empty_at] = (text, merged, path)
            ranks[empty_at] = _logaddexp(ranks[empty_at], rank)
            trie.finals[0] = merged
            continue
        path = trie.insert(words)
        end = trie.edges[path[-1]].dst if path else 0
        trie.finals[end] = log_prob - math.fsum(trie.edges[e].am for e in path)
        if not words:
            empty_at = len(entries)
        entries.append((" ".join(w.word for w in words), log_prob, path))
        ranks.append(rank)
    if not keep_order:  # best-first again after a possible merge of empty hypotheses
        resort = sorted(range(len(entries)), key=lambda k: -entries[k][1])
        entries = [entries[k] for k in resort]
        ranks = [ranks[k] for k in resort]

    canon = _minimise(trie) if minimise else list(range(len(trie.children)))

    # Edges of representative nodes become lattice edges; every trie edge maps onto one of them.
    def edge_sig(t: _TEdge) -> tuple:
        return (canon[t.src], t.word, t.start, t.end, _q(t.am), _q(t.prior), canon[t.dst])

    reps = sorted(set(canon))
    kept: dict[tuple, _TEdge] = {}
    for n in reps:
        for e in trie.children[n]:
            t = trie.edges[e]
            kept.setdefault(edge_sig(t), t)
    arrival: dict[int, float] = {0: 0.0}
    for sig, t in kept.items():
        dst = sig[-1]
        arrival[dst] = min(arrival.get(dst, math.inf), t.end)

    # number nodes in topological order, earliest first, so ids read left to right in time
    rep_index = {n: i for i, n in enumerate(reps)}
    arcs = [(rep_index[sig[0]], rep_index[sig[-1]]) for sig in kept]
    indeg = [0] * len(reps)
    out: list[list[int]] = [[] for _ in reps]
    for s, d in arcs:
        out[s].append(d)
        indeg[d] += 1
    heap = [(arrival[reps[i]], reps[i], i) for i in range(len(reps)) if indeg[i] == 0]
    heapq.heapify(heap)
    new_id: dict[int, int] = {}
    while heap:
        _, rep, i = heapq.heappop(heap)
        new_id[rep] = len(new_id)
        for d in out[i]:
            indeg[d] -= 1
            if indeg[d] == 0:
                heapq.heappush(heap, (arrival[reps[d]], reps[d], d))

    sigs = sorted(
        kept,
        key=lambda s: (new_id[s[0]], s[2], s[3], s[1], new_id[s[-1]], s[4], s[5]),
    )
    edge_id = {sig: k for k, sig in enumerate(sigs)}
    paths = [tuple(edge_id[edge_sig(trie.edges[e])] for e in path) for _, _, path in entries]
    probs = _softmax(ranks)
    mass = [0.0] * len(sigs)
    for p, path in zip(probs, paths, strict=True):
        for k in set(path):
            mass[k] += p

    nodes = [Node(new_id[rep], arrival[rep]) for rep in sorted(new_id, key=new_id.__getitem__)]
    edges = [
        Edge(
            id=k,
            src=new_id[sig[0]],
            dst=new_id[sig[-1]],
            word=kept[sig].word,
            start=kept[sig].start,
            end=kept[sig].end,
            am=kept[sig].am,
            prior=kept[sig].prior,
            posterior=min(1.0, max(0.0, mass[k])),
        )
        for k, sig in enumerate(sigs)
    ]
    finals = {new_id[n]: w for n, w in sorted(trie.finals.items()) if canon[n] == n}
    nbest = [NBestEntry(text, lp, path) for (text, lp, _), path in zip(entries, paths, strict=True)]
    words = [
        WordResult(edges[k].word, edges[k].start, edges[k].end, edges[k].posterior)
        for k in paths[0]
    ]
    lattice = Lattice(
        nodes=nodes,
        edges=edges,
        start=new_id[canon[0]],
        finals=dict(sorted(finals.items())),
        nbest=nbest,
        words=words,
        frame_shift_s=float(frame_shift_s),
    )
    lattice.validate()
    return lattice
