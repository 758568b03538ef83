"""N-best word lattices: built on the device from beam search, rescored in the cloud.

Importing this package needs only the standard library (the device runtime imports it);
reading JSON additionally needs ``jsonschema``, imported when a lattice is read.
"""

from edgeasr.lattice.graph import (
    Edge,
    HypothesisLike,
    Lattice,
    LatticeError,
    LatticePath,
    NBestEntry,
    Node,
    PieceVocab,
    PriorFn,
    WordResult,
    build_lattice,
)
from edgeasr.lattice.io import FORMAT, VERSION, check_lattice, from_json, to_json

__all__ = [
    "FORMAT",
    "VERSION",
    "Edge",
    "HypothesisLike",
    "Lattice",
    "LatticeError",
    "LatticePath",
    "NBestEntry",
    "Node",
    "PieceVocab",
    "PriorFn",
    "WordResult",
    "build_lattice",
    "check_lattice",
    "from_json",
    "to_json",
]
