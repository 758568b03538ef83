"""What every device transducer shares: the predictor cache and the internal-LM prior."""

from __future__ import annotations

import numpy as np

from edgeasr.tokenizer import BLANK_ID


class CachedScorer:
    """Base of the device scorers; subclasses provide ``_decode_batch`` and ``joiner``."""

    def __init__(self, context_size: int) -> None:
        self.context_size = context_size
        self._dec_cache: dict[tuple[int, ...], np.ndarray] = {}
        self._prior_cache: dict[tuple[int, ...], np.ndarray] = {}

    def _decode_batch(self, contexts: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decoder(self, contexts: np.ndarray) -> np.ndarray:
        """Cached by context: a stateless predictor's output depends only on the last tokens."""
        keys = [tuple(int(v) for v in row) for row in contexts]
        missing = sorted({k for k in keys if k not in self._dec_cache})
        if missing:
            out = self._decode_batch(np.array(missing, dtype=np.int64))
            for k, v in zip(missing, out, strict=True):
                self._dec_cache[k] = v
        return np.stack([self._dec_cache[k] for k in keys])

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
