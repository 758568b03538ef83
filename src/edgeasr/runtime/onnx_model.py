"""The transducer on onnxruntime: encoder chunks with carried state, predictor and joiner.

Implements the :class:`edgeasr.search.Scorer` protocol, so device search is the very code that
the training side tests against the torch model.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edgeasr.runtime.package import RuntimePackage
from edgeasr.tokenizer import BLANK_ID

EncoderState = tuple[np.ndarray, np.ndarray]


def _session(path, num_threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxTransducer:
    """Three onnxruntime sessions shared by every stream of a recogniser (they are stateless:
    all per-stream state is passed in and out explicitly)."""

    def __init__(self, package: RuntimePackage, variant: str = "fp32", num_threads: int = 1):
        cfg = package.model_config
        self.variant = variant
        self.context_size = int(cfg["context_size"])
        self.vocab_size = int(cfg["vocab_size"])
        self.subsampling = package.subsampling
        self.num_mel_bins = int(cfg["num_mel_bins"])
        self._state_shapes = (
            (int(cfg["num_layers"]), int(cfg["encoder_dim"])),
            (int(cfg["num_layers"]), int(cfg["lstm_hidden"])),
        )
        self._enc = _session(package.graph("encoder", variant), num_threads)
        self._dec = _session(package.graph("decoder", variant), num_threads)
        self._join = _session(package.graph("joiner", variant), num_threads)
        self._dec_cache: dict[tuple[int, ...], np.ndarray] = {}
        self._prior_cache: dict[tuple[int, ...], np.ndarray] = {}

    def init_state(self) -> EncoderState:
        (L, P), (_, H) = self._state_shapes
        return np.zeros((L, 1, P), np.float32), np.zeros((L, 1, H), np.float32)

    def encode_chunk(
        self, feats: np.ndarray, state: EncoderState | None
    ) -> tuple[np.ndarray, EncoderState]:
        """Raw fbank (T, 80), T a multiple of the subsampling factor → (T/sub, J) and state."""
        h, c = state if state is not None else self.init_state()
        x = np.ascontiguousarray(feats, dtype=np.float32)[None]
        enc, h, c = self._enc.run(None, {"feats": x, "h": h, "c": c})
        return enc[0], (h, c)

    def decoder(self, contexts: np.ndarray) -> np.ndarray:
        """Cached by context: a stateless predictor's output depends only on the last tokens."""
        keys = [tuple(int(v) for v in row) for row in contexts]
        missing = sorted({k for k in keys if k not in self._dec_cache})
        if missing:
            out = self._dec.run(None, {"contexts": np.array(missing, dtype=np.int64)})[0]
            for k, v in zip(missing, out, strict=True):
                self._dec_cache[k] = v
        return np.stack([self._dec_cache[k] for k in keys])

    def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        enc = np.ascontiguousarray(enc, dtype=np.float32)
        dec = np.ascontiguousarray(dec, dtype=np.float32)
        return self._join.run(None, {"enc": enc, "dec": dec})[0]

    def prior(self, tokens: list[int]) -> list[float]:
        """Internal language model estimate of each token given the previous ones.

        The joiner fed with a zero acoustic vector leaves only what the predictor believes
        (Meng et al., 2021, "internal LM estimation"); blank is excluded and the rest
        renormalised. Lattices carry it so a cloud LM can replace it instead of adding to it.
        """
        out = []
        for i, tok in enumerate(tokens):
            ctx = tokens[max(0, i - self.context_size) : i]
            key = tuple([BLANK_ID] * (self.context_size - len(ctx)) + ctx)
            lp = self._prior_cache.get(key)
            if lp is None:
                dec = self.decoder(np.array([key], dtype=np.int64))
                logits = self.joiner(np.zeros_like(dec), dec)[0].astype(np.float64)
                logits[BLANK_ID] = -np.inf
                m = logits.max()
                lp = logits - m - np.log(np.exp(logits - m).sum())
                self._prior_cache[key] = lp
            out.append(float(lp[tok]))
        return out
