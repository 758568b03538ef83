"""The lattice's JSON form: versioned, checksummed, schema-validated, semantically checked.

A lattice crosses a network to a service that trusts its scores, so the reader rejects anything
it did not expect, each time with a message that says what is wrong:

1. the text must be UTF-8 JSON without NaN/Infinity (JSON has none; Python writes them unless
   told not to, so the writer uses ``allow_nan=False`` and the reader refuses them) and without
   duplicate keys (the checksum covers the parsed object, so a duplicate could hide an edit);
2. ``format`` must be ``"edgeasr-lattice"`` and ``version`` one this reader knows, checked
   before anything else so a future file gets "unsupported version" rather than noise;
3. ``sha256`` must match the SHA-256 of the canonical JSON of the object without that key
   (``sort_keys=True, separators=(",", ":"), ensure_ascii=False``, UTF-8), which catches
   corruption and hand edits;
4. the JSON Schema (``lattice.schema.json``, draft 2020-12) fixes structure and types;
5. :func:`check_lattice` checks what a schema cannot: ids, references, acyclicity, that every
   edge lies on a start-to-final path, finiteness, times, and that each N-best path adds up.

``jsonschema`` is imported inside the reader only: the device writes lattices and must not need it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

from edgeasr.lattice.graph import (
    Edge,
    Lattice,
    LatticeError,
    NBestEntry,
    Node,
    WordResult,
    topological_order,
)

FORMAT = "edgeasr-lattice"
VERSION = 1
SCHEMA_FILE = "lattice.schema.json"
SUM_TOL = 1e-6
"""How closely an N-best path's am sum plus final weight must match its log_prob on read."""


# ---------------------------------------------------------------------------------------------
# writing


def canonical_json(obj: Any) -> bytes:
    """The bytes the checksum is taken over: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def checksum(obj: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``obj`` without its ``sha256`` key."""
    body = {k: v for k, v in obj.items() if k != "sha256"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def lattice_to_dict(lat: Lattice) -> dict[str, Any]:
    """The JSON object of a lattice, checksum included."""
    obj: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "frame_shift_s": lat.frame_shift_s,
        "start": lat.start,
        "nodes": [{"id": n.id, "time": n.time} for n in lat.nodes],
        "edges": [
            {
                "id": e.id,
                "src": e.src,
                "dst": e.dst,
                "word": e.word,
                "start": e.start,
                "end": e.end,
                "am": e.am,
                "prior": e.prior,
                "posterior": e.posterior,
            }
            for e in lat.edges
        ],
        "finals": [{"node": n, "weight": w} for n, w in sorted(lat.finals.items())],
        "nbest": [
            {"text": h.text, "log_prob": h.log_prob, "path": list(h.path)} for h in lat.nbest
        ],
        "words": [
            {"word": w.word, "start": w.start, "end": w.end, "confidence": w.confidence}
            for w in lat.words
        ],
    }
    obj["sha256"] = checksum(obj)
    return obj


def to_json(lat: Lattice) -> str:
    """Serialise after checking, so the device never sends what the reader would refuse."""
    check_lattice(lat)
    try:
        return json.dumps(
            lattice_to_dict(lat), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:  # pragma: no cover - check_lattice catches these
        raise LatticeError(f"lattice: cannot serialise: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# reading


def _reject_constant(name: str) -> Any:
    raise LatticeError(f"lattice: non-finite number {name} in JSON (scores must be finite)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise LatticeError(
            f"lattice: number {literal[:40]} is out of range (scores must be finite)"
        )
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise LatticeError(f"lattice: duplicate key {k!r} in JSON object")
        obj[k] = v
    return obj


@functools.cache
def load_schema() -> dict[str, Any]:
    """The shipped JSON Schema (draft 2020-12) for lattice version 1."""
    text = resources.files("edgeasr.lattice").joinpath(SCHEMA_FILE).read_text("utf-8")
    return json.loads(text)


@functools.cache
def _validator() -> Any:
    try:
        import jsonschema
    except ImportError as exc:  # the device does not read lattices; the cloud has it
        raise ImportError("reading lattices needs the 'jsonschema' package") from exc
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _schema_errors(obj: Any) -> None:
    from jsonschema.exceptions import best_match

    err = best_match(_validator().iter_errors(obj))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise LatticeError(f"lattice: schema violation at {where}: {err.message}")


def _parse(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LatticeError(
                f"lattice: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
    if not isinstance(text, str):
        raise LatticeError(f"lattice: expected JSON text (str or bytes), got {type(text).__name__}")
    try:
        obj = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_no_duplicate_keys,
        )
    except LatticeError:
        raise
    except json.JSONDecodeError as exc:
        raise LatticeError(
            f"lattice: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise LatticeError(f"lattice: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise LatticeError("lattice: not valid JSON (nested too deeply)") from exc
    if not isinstance(obj, dict):
        raise LatticeError(f"lattice: expected a JSON object, got {type(obj).__name__}")
    return obj


def _check_header(obj: dict[str, Any]) -> None:
    fmt = obj.get("format")
    if fmt != FORMAT:
        if "format" not in obj:
            raise LatticeError(f"lattice: missing 'format' (expected {FORMAT!r})")
        raise LatticeError(f"lattice: not an edgeasr lattice: format is {fmt!r}, not {FORMAT!r}")
    version = obj.get("version")
    if "version" not in obj:
        raise LatticeError("lattice: missing 'version'")
    if type(version) is not int or version != VERSION:
        raise LatticeError(
            f"lattice: unsupported version {version!r} (this reader supports version {VERSION})"
        )
    digest = obj.get("sha256")
    if not isinstance(digest, str):
        raise LatticeError("lattice: missing 'sha256' checksum")
    expected = checksum(obj)
    if digest != expected:
        raise LatticeError(
            f"lattice: checksum mismatch (corrupted or edited): file says {digest[:16]}..., "
            f"content hashes to {expected[:16]}..."
        )


def lattice_from_dict(obj: dict[str, Any]) -> Lattice:
    """Dataclasses from an object that passed the schema; duplicate finals are refused here."""
    finals: dict[int, float] = {}
    for f in obj["finals"]:
        node = int(f["node"])
        if node in finals:
            raise LatticeError(f"lattice: node {node} is listed twice in finals")
        finals[node] = float(f["weight"])
    return Lattice(
        nodes=[Node(int(n["id"]), float(n["time"])) for n in obj["nodes"]],
        edges=[
            Edge(
                id=int(e["id"]),
                src=int(e["src"]),
                dst=int(e["dst"]),
                word=e["word"],
                start=float(e["start"]),
                end=float(e["end"]),
                am=float(e["am"]),
                prior=float(e["prior"]),
                posterior=float(e["posterior"]),
            )
            for e in obj["edges"]
        ],
        start=int(obj["start"]),
        finals=finals,
        nbest=[
            NBestEntry(h["text"], float(h["log_prob"]), tuple(int(i) for i in h["path"]))
            for h in obj["nbest"]
        ],
        words=[
            WordResult(w["word"], float(w["start"]), float(w["end"]), float(w["confidence"]))
            for w in obj["words"]
        ],
        frame_shift_s=float(obj["frame_shift_s"]),
    )


def from_json(text: str | bytes) -> Lattice:
    """Parse, authenticate (checksum), validate (schema) and check a lattice.

    Every failure is a :class:`LatticeError` naming the problem; nothing else escapes.
    """
    obj = _parse(text)
    _check_header(obj)
    _schema_errors(obj)
    try:
        lat = lattice_from_dict(obj)
    except LatticeError:
        raise
    except (ArithmeticError, KeyError, TypeError, ValueError) as exc:  # pragma: no cover
        raise LatticeError(f"lattice: malformed content: {exc!r}") from exc
    check_lattice(lat)
    return lat


# ---------------------------------------------------------------------------------------------
# semantic checks


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _is_id(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_ids(kind: str, ids: Sequence[object]) -> None:
    seen: set[int] = set()
    for i in ids:
        if not _is_id(i):
            raise LatticeError(f"lattice: {kind} id {i!r} is not an integer")
        if i in seen:
            raise LatticeError(f"lattice: duplicate {kind} id {i}")
        seen.add(i)  # type: ignore[arg-type]
    missing = sorted(set(range(len(ids))) - seen)
    if missing:
        raise LatticeError(
            f"lattice: {kind} ids must be 0..{len(ids) - 1} without gaps (missing {missing[0]})"
        )


def _find_cycle(n_nodes: int, arcs: list[tuple[int, int]]) -> list[int]:
    """Some cycle, as a node list; only called once Kahn's algorithm has found there is one."""
    out: list[list[int]] = [[] for _ in range(n_nodes)]
    for s, d in arcs:
        out[s].append(d)
    state = [0] * n_nodes  # 0 new, 1 on stack, 2 done
    for root in range(n_nodes):
        if state[root]:
            continue
        stack: list[tuple[int, int]] = [(root, 0)]
        trail: list[int] = [root]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            if i < len(out[node]):
                stack[-1] = (node, i + 1)
                nxt = out[node][i]
                if state[nxt] == 1:
                    return trail[trail.index(nxt) :] + [nxt]
                if state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, 0))
                    trail.append(nxt)
            else:
                state[node] = 2
                stack.pop()
                trail.pop()
    return []  # pragma: no cover


def _reach(start: set[int], adj: list[list[int]]) -> set[int]:
    seen = set(start)
    todo = list(start)
    while todo:
        for m in adj[todo.pop()]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def check_lattice(lat: Lattice) -> None:
    """Raise :class:`LatticeError` unless ``lat`` is a well-formed lattice.

    Checks: ids unique and 0..N-1; the start node, edge ends and finals exist; times, scores and
    weights finite; start <= end; posteriors in [0, 1]; the graph acyclic with every edge on a
    start-to-final path; every N-best path a connected start-to-final edge sequence whose am sum
    plus final weight equals its log_prob and whose words are its text; ``words`` matching the
    first N-best entry.
    """
    if not _finite(lat.frame_shift_s) or lat.frame_shift_s <= 0:
        raise LatticeError(f"lattice: frame_shift_s must be positive, got {lat.frame_shift_s!r}")
    _check_ids("node", [n.id for n in lat.nodes])
    _check_ids("edge", [e.id for e in lat.edges])
    n_nodes = len(lat.nodes)
    for n in lat.nodes:
        if not _finite(n.time) or n.time < 0:
            raise LatticeError(f"lattice: node {n.id} has an invalid time {n.time!r}")
    if not _is_id(lat.start) or not 0 <= lat.start < n_nodes:
        raise LatticeError(f"lattice: start node {lat.start!r} does not exist")

    edges = sorted(lat.edges, key=lambda e: e.id)
    for e in edges:
        if not _is_id(e.src) or not 0 <= e.src < n_nodes:
            raise LatticeError(f"lattice: edge {e.id} starts at missing node {e.src!r}")
        if not _is_id(e.dst) or not 0 <= e.dst < n_nodes:
            raise LatticeError(f"lattice: edge {e.id} points to missing node {e.dst!r}")
        if not isinstance(e.word, str):
            raise LatticeError(f"lattice: edge {e.id} word is not a string")
        for name in ("start", "end"):
            t = getattr(e, name)
            if not _finite(t) or t < 0:
                raise LatticeError(f"lattice: edge {e.id} has an invalid {name} time {t!r}")
        if e.start > e.end:
            raise LatticeError(
                f"lattice: edge {e.id} has negative duration (start {e.start} > end {e.end})"
            )
        for name in ("am", "prior"):
            if not _finite(getattr(e, name)):
                raise LatticeError(f"lattice: edge {e.id} has a non-finite {name} score")
        if not _finite(e.posterior) or not 0.0 <= e.posterior <= 1.0:
            raise LatticeError(f"lattice: edge {e.id} posterior {e.posterior!r} is not in [0, 1]")

    if not lat.finals:
        raise LatticeError("lattice: no final nodes")
    for node, w in lat.finals.items():
        if not _is_id(node) or not 0 <= node < n_nodes:
            raise LatticeError(f"lattice: final weight for missing node {node!r}")
        if not _finite(w):
            raise LatticeError(f"lattice: final weight of node {node} is not finite")

    arcs = [(e.src, e.dst) for e in edges]
    if topological_order(n_nodes, arcs) is None:
        cycle = " -> ".join(str(n) for n in _find_cycle(n_nodes, arcs))
        raise LatticeError(f"lattice: graph has a cycle ({cycle}); lattices must be acyclic")
    fwd: list[list[int]] = [[] for _ in range(n_nodes)]
    bwd: list[list[int]] = [[] for _ in range(n_nodes)]
    for s, d in arcs:
        fwd[s].append(d)
        bwd[d].append(s)
    from_start = _reach({lat.start}, fwd)
    to_final = _reach(set(lat.finals), bwd)
    for e in edges:
        if e.src not in from_start or e.dst not in to_final:
            raise LatticeError(
                f"lattice: edge {e.id} does not lie on a path from the start node to a final node"
            )
    for n in lat.nodes:
        if n.id not in from_start or n.id not in to_final:
            raise LatticeError(
                f"lattice: node {n.id} does not lie on a path from the start node to a final node"
            )

    if not lat.nbest:
        raise LatticeError("lattice: empty nbest list")
    for i, h in enumerate(lat.nbest):
        _check_nbest_entry(lat, i, h, edges)

    best = [edges[k] for k in lat.nbest[0].path]
    if len(lat.words) != len(best) or any(
        w.word != e.word or w.start != e.start or w.end != e.end
        for w, e in zip(lat.words, best, strict=True)
    ):
        raise LatticeError("lattice: words do not match the path of nbest 0")
    for k, w in enumerate(lat.words):
        if not _finite(w.confidence) or not 0.0 <= w.confidence <= 1.0:
            raise LatticeError(f"lattice: word {k} confidence {w.confidence!r} is not in [0, 1]")


def _check_nbest_entry(lat: Lattice, i: int, h: NBestEntry, edges: list[Edge]) -> None:
    where = f"lattice: nbest {i}"
    if not _finite(h.log_prob):
        raise LatticeError(f"{where} has a non-finite log_prob")
    node = lat.start
    for pos, k in enumerate(h.path):
        if not _is_id(k) or not 0 <= k < len(edges):
            raise LatticeError(f"{where} path uses missing edge {k!r}")
        e = edges[k]
        if e.src != node:
            raise LatticeError(
                f"{where} path is broken at position {pos}: edge {k} leaves node {e.src}, "
                f"not node {node}"
            )
        node = e.dst
    if node not in lat.finals:
        raise LatticeError(f"{where} path ends at node {node}, which is not final")
    total = math.fsum([*(edges[k].am for k in h.path), lat.finals[node]])
    if abs(total - h.log_prob) > SUM_TOL:
        raise LatticeError(
            f"{where} does not add up: edge am + final weight = {total!r} "
            f"but log_prob = {h.log_prob!r}"
        )
    words = " ".join(edges[k].word for k in h.path)
    if h.text != words:
        raise LatticeError(f"{where} text {h.text!r} does not match its path words {words!r}")
