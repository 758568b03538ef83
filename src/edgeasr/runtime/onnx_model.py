"""The transducer on onnxruntime: encoder chunks with carried state, predictor and joiner.

Implements the :class:`edgeasr.search.Scorer` protocol, so device search is the very code that
the training side tests against the torch model.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edgeasr.runtime.package import RuntimePackage, encoder_state_shapes
from edgeasr.runtime.scorer import CachedScorer

EncoderState = tuple[np.ndarray, np.ndarray]


def _session(path, num_threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxTransducer(CachedScorer):
    """Three onnxruntime sessions shared by every stream of a recogniser (they are stateless:
    all per-stream state is passed in and out explicitly). The encoder is an LSTM or a Conformer:
    its two state tensors ``h`` and ``c`` are whatever :func:`encoder_state_shapes` says."""

    def __init__(self, package: RuntimePackage, variant: str = "fp32", num_threads: int = 1):
        cfg = package.model_config
        super().__init__(int(cfg["context_size"]))
        self.variant = variant
        self.vocab_size = int(cfg["vocab_size"])
        self.subsampling = package.subsampling
        self.num_mel_bins = int(cfg["num_mel_bins"])
        self._state_shapes = encoder_state_shapes(cfg)
        self._enc = _session(package.graph("encoder", variant), num_threads)
        self._dec = _session(package.graph("decoder", variant), num_threads)
        self._join = _session(package.graph("joiner", variant), num_threads)
        biaser = package.manifest.get("biaser")
        self._biaser = (
            _session(package.path / biaser["file"], num_threads) if biaser is not None else None
        )

    @property
    def has_ctc(self) -> bool:
        """Whether the encoder graph also outputs the CTC head's log-probs (for the second
        pass); packages exported before it existed, or from models without one, do not."""
        return any(o.name == "ctc" for o in self._enc.get_outputs())

    @property
    def has_biaser(self) -> bool:
        """Whether the package has a neural biasing module (``biaser.onnx``)."""
        return self._biaser is not None

    def init_state(self) -> EncoderState:
        h, c = self._state_shapes
        return np.zeros(h, np.float32), np.zeros(c, np.float32)

    def encode_chunk(
        self, feats: np.ndarray, state: EncoderState | None
    ) -> tuple[np.ndarray, EncoderState]:
        """Raw fbank (T, 80), T a multiple of the subsampling factor → (T/sub, J) and state."""
        enc, _, state = self.encode_chunk_ctc(feats, state, ctc=False)
        return enc, state

    def encode_chunk_ctc(
        self, feats: np.ndarray, state: EncoderState | None, ctc: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, EncoderState]:
        """:meth:`encode_chunk` plus the CTC head's log-probs of the same frames (T/sub, V), or
        None with ``ctc`` False (the graph then skips computing them)."""
        if ctc and not self.has_ctc:
            raise ValueError("this runtime package's encoder has no CTC output (re-export it)")
        h, c = state if state is not None else self.init_state()
        x = np.ascontiguousarray(feats, dtype=np.float32)[None]
        names = ["enc", "h_out", "c_out"] + (["ctc"] if ctc else [])
        out = self._enc.run(names, {"feats": x, "h": h, "c": c})
        return out[0][0], (out[3][0] if ctc else None), (out[1], out[2])

    def _decode_batch(self, contexts: np.ndarray) -> np.ndarray:
        return self._dec.run(None, {"contexts": contexts})[0]

    def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        enc = np.ascontiguousarray(enc, dtype=np.float32)
        dec = np.ascontiguousarray(dec, dtype=np.float32)
        return self._join.run(None, {"enc": enc, "dec": dec})[0]

    def biased_log_probs(
        self,
        enc: np.ndarray,
        dec: np.ndarray,
        valid: np.ndarray,
        feats: np.ndarray,
        blank_penalty: float,
        gate_offset: float = 0.0,
    ) -> np.ndarray:
        """Joiner and pointer generator in one graph (see :mod:`edgeasr.model.biaser`)."""
        if self._biaser is None:
            raise ValueError("this runtime package has no neural biasing module (biaser.onnx)")
        inputs = {
            "enc": np.ascontiguousarray(enc, dtype=np.float32),
            "dec": np.ascontiguousarray(dec, dtype=np.float32),
            "valid": np.ascontiguousarray(valid, dtype=np.float32),
            "feats": np.ascontiguousarray(feats, dtype=np.float32),
            "blank_penalty": np.array([blank_penalty], dtype=np.float32),
            "gate_offset": np.array([gate_offset], dtype=np.float32),
        }
        return self._biaser.run(None, inputs)[0]
