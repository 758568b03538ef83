"""Model: encoder, predictor, joiner and the transducer that ties them together."""

from edgeasr.model.config import ModelConfig
from edgeasr.model.transducer import Transducer

__all__ = ["ModelConfig", "Transducer"]
