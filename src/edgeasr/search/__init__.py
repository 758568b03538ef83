"""Transducer search on plain numpy arrays, shared by the torch and onnxruntime paths."""

from edgeasr.search.beam import Hypothesis, Scorer, greedy_search, modified_beam_search

__all__ = ["Hypothesis", "Scorer", "greedy_search", "modified_beam_search"]
