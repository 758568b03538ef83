"""Adapter that lets numpy search drive the torch model."""

from __future__ import annotations

import numpy as np
import torch

from edgeasr.model.encoder import EncoderState
from edgeasr.model.transducer import Transducer


class TorchScorer:
    """Implements :class:`edgeasr.search.Scorer` with a (frozen) torch Transducer.

    Decoder outputs are cached by context, since a stateless predictor's output depends only on
    the last ``context_size`` tokens and beams revisit the same contexts constantly.
    """

    def __init__(self, model: Transducer) -> None:
        self.model = model.eval()
        self.context_size = model.cfg.context_size
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    @torch.inference_mode()
    def decoder(self, contexts: np.ndarray) -> np.ndarray:
        keys = [tuple(int(v) for v in row) for row in contexts]
        missing = sorted({k for k in keys if k not in self._cache})
        if missing:
            out = self.model.decode_tokens(torch.tensor(missing, dtype=torch.long)).numpy()
            for k, v in zip(missing, out, strict=True):
                self._cache[k] = v
        return np.stack([self._cache[k] for k in keys])

    @torch.inference_mode()
    def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        return self.model.joiner(torch.from_numpy(enc), torch.from_numpy(dec)).numpy()

    def encode_chunk(
        self, feats: np.ndarray, state: EncoderState | None
    ) -> tuple[np.ndarray, EncoderState]:
        """One streaming chunk of fbank (T, 80), T a multiple of the subsampling factor."""
        enc, _, state = self.encode_chunk_ctc(feats, state, ctc=False)
        return enc, state

    @torch.inference_mode()
    def encode_chunk_ctc(
        self, feats: np.ndarray, state: EncoderState | None, ctc: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, EncoderState]:
        """:meth:`encode_chunk` plus the CTC head's log-probs of the same frames (T', V) for the
        second pass (None with ``ctc`` False)."""
        x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))[None]
        raw, lens, state = self.model.encode_raw(x, torch.tensor([x.shape[1]]), state)
        n = int(lens[0])
        enc = self.model.joiner.enc_proj(raw)[0, :n].numpy()
        ctc_lp = self.model.ctc_log_probs(raw)[0, :n].numpy() if ctc else None
        return enc, ctc_lp, state

    def encode(self, feats: np.ndarray) -> np.ndarray:
        """Whole-utterance fbank (T, 80) → projected encoder frames (T', J)."""
        return self.encode_chunk(feats, None)[0]
