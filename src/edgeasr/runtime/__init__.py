"""The device runtime: numpy + onnxruntime + kaldi-native-fbank + sentencepiece, no torch."""

from edgeasr.runtime.endpoint import EndpointConfig
from edgeasr.runtime.package import RuntimePackageError, load_runtime_package
from edgeasr.runtime.recognizer import EVENT_KINDS, Event, Recognizer, Stream

__all__ = [
    "EVENT_KINDS",
    "EndpointConfig",
    "Event",
    "Recognizer",
    "RuntimePackageError",
    "Stream",
    "load_runtime_package",
]
