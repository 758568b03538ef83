"""Transducer search on plain numpy arrays, shared by the torch and onnxruntime paths."""

from edgeasr.search.beam import (
    BeamState,
    Hypothesis,
    Scorer,
    greedy_search,
    modified_beam_search,
    nbest,
    tuned_beam,
)
from edgeasr.search.context import ContextGraph, ContextState, Phrase

__all__ = [
    "BeamState",
    "ContextGraph",
    "ContextState",
    "Hypothesis",
    "Phrase",
    "Scorer",
    "greedy_search",
    "modified_beam_search",
    "nbest",
    "tuned_beam",
]
