"""The transducer in numpy, from a packed model file, with kernels that skip zero weights.

This is the device path for pruned models: onnxruntime multiplies every weight whether it is
zero or not, so a 90 % sparse model costs it as much as a dense one. Here each weight matrix is
a ``Linear`` whose product is either dense (numpy/BLAS) or sparse
(``kernels.BlockSparseMatrix``, compiled with numba): the same for every matrix when the
recogniser asks for ``dense`` or ``sparse`` (so the two can be compared on the very same
weights), or chosen per matrix with ``auto``, the default, which skips zeros only in matrices
sparse enough for it to pay (``kernels.zero_skip_pays``): a dense or lightly pruned model then
runs as fast as BLAS instead of slower. The arithmetic follows the torch modules exactly (LSTM gate
order i, f, g, o; LayerNorm eps 1e-5).

Only numpy, numba and the packed-file reader are imported: no torch, no onnxruntime.
"""

from __future__ import annotations

import numpy as np

from edgeasr.compress.packed import PackedModel, QuantTensor
from edgeasr.runtime.kernels import ROW_BLOCKS, BlockSparseMatrix, zero_skip_pays
from edgeasr.runtime.scorer import CachedScorer

EncoderState = tuple[np.ndarray, np.ndarray]
KERNELS = ("dense", "sparse", "auto")


def _dense(t: np.ndarray | QuantTensor) -> np.ndarray:
    return (t.dense() if isinstance(t, QuantTensor) else np.asarray(t)).astype(np.float32)


class Linear:
    """``y = x W^T + b`` for row-major activations ``x`` (N, in)."""

    def __init__(self, weight: np.ndarray | QuantTensor, bias: np.ndarray | None, kernel: str):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        block = weight.block if isinstance(weight, QuantTensor) else (1, 1)
        w = _dense(weight)
        w = w.reshape(w.shape[0], -1)
        self.out_features, self.in_features = w.shape
        self.nnz = int(np.count_nonzero(w))
        self.bias = None if bias is None else np.asarray(bias, np.float32)
        # the pruning block when it was br×1 (rows of one input), else single weights
        br = block[0] if block[1] == 1 and block[0] in ROW_BLOCKS else 1
        if kernel == "auto":
            kernel = "sparse" if zero_skip_pays(w, br) else "dense"
        self.kernel = kernel
        if kernel == "dense":
            self._wt = np.ascontiguousarray(w.T)
        else:
            self._w = BlockSparseMatrix(w, br)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self._wt if self.kernel == "dense" else self._w.matmul(x)
        if self.bias is not None:
            y = y + self.bias
        return y

    @property
    def macs(self) -> int:
        """Multiply-adds per input row actually performed by this kernel."""
        return self._w.nnz if self.kernel == "sparse" else self.in_features * self.out_features


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class SparseTransducer(CachedScorer):
    """Implements the :class:`edgeasr.search.Scorer` protocol from a :class:`PackedModel`."""

    def __init__(self, packed: PackedModel, kernel: str = "auto") -> None:
        cfg = packed.meta["model_config"]
        if cfg.get("encoder_type", "lstm") != "lstm":
            raise ValueError(
                f"the sparse runtime runs LSTM encoders only, not {cfg['encoder_type']!r}"
            )
        t = packed.tensors
        super().__init__(int(cfg["context_size"]))
        self.kernel = kernel
        self.vocab_size = int(cfg["vocab_size"])
        self.num_mel_bins = int(cfg["num_mel_bins"])
        self.stack = int(cfg["stack"])
        self.reduce_after = int(cfg["reduce_after"])
        self.subsampling = self.stack * (2 if self.reduce_after > 0 else 1)
        self.num_layers = int(cfg["num_layers"])
        self.P, self.H = int(cfg["encoder_dim"]), int(cfg["lstm_hidden"])

        def lin(prefix: str) -> Linear:
            return Linear(t[f"{prefix}.weight"], t[f"{prefix}.bias"], kernel)

        self.mean = t["feat_mean"]
        self.std = t["feat_std"]
        self.input_proj = lin("encoder.input_proj")
        self.layers = []
        for i in range(self.num_layers):
            p = f"encoder.layers.{i}"
            hr = t.get(f"{p}.weight_hr_l0")
            self.layers.append(
                (
                    Linear(
                        t[f"{p}.weight_ih_l0"], t[f"{p}.bias_ih_l0"] + t[f"{p}.bias_hh_l0"], kernel
                    ),
                    Linear(t[f"{p}.weight_hh_l0"], None, kernel),
                    None if hr is None else Linear(hr, None, kernel),
                    (t[f"encoder.norms.{i}.weight"], t[f"encoder.norms.{i}.bias"]),
                )
            )
        self.reduce_proj = lin("encoder.reduce_proj") if self.reduce_after > 0 else None
        self.enc_proj = lin("joiner.enc_proj")
        self.dec_proj = lin("joiner.dec_proj")
        self.out = lin("joiner.out")
        # lookups, not products: dequantised once
        self.embedding = _dense(t["predictor.embedding.weight"])
        self.conv = _dense(t["predictor.conv.weight"])

    # -- encoder --------------------------------------------------------------------------
    def init_state(self) -> EncoderState:
        L = self.num_layers
        return np.zeros((L, 1, self.P), np.float32), np.zeros((L, 1, self.H), np.float32)

    def _lstm(self, i: int, x: np.ndarray, h: np.ndarray, c: np.ndarray):
        w_ih, w_hh, w_hr, _ = self.layers[i]
        gx = w_ih(x)  # all frames of the chunk at once
        out = np.empty((x.shape[0], h.shape[-1]), np.float32)
        H = self.H
        for t in range(x.shape[0]):
            g = gx[t : t + 1] + w_hh(h)
            i_g, f_g = _sigmoid(g[:, :H]), _sigmoid(g[:, H : 2 * H])
            g_g, o_g = np.tanh(g[:, 2 * H : 3 * H]), _sigmoid(g[:, 3 * H :])
            c = f_g * c + i_g * g_g
            h = o_g * np.tanh(c)
            if w_hr is not None:
                h = w_hr(h)
            out[t] = h[0]
        return out, h, c

    def encode_chunk(
        self, feats: np.ndarray, state: EncoderState | None
    ) -> tuple[np.ndarray, EncoderState]:
        """Raw fbank (T, 80), T a multiple of the subsampling factor → (T/sub, J) and state."""
        h0, c0 = state if state is not None else self.init_state()
        x = (np.asarray(feats, np.float32) - self.mean) / self.std
        T = x.shape[0] // self.stack
        x = x[: T * self.stack].reshape(T, -1)
        x = np.maximum(self.input_proj(x), 0.0)
        hs, cs = [], []
        for i in range(self.num_layers):
            y, h, c = self._lstm(i, x, h0[i], c0[i])
            hs.append(h)
            cs.append(c)
            w, b = self.layers[i][3]
            x = _layer_norm(x + y, w, b)
            if self.reduce_proj is not None and i + 1 == self.reduce_after:
                x = self.reduce_proj(x[: (x.shape[0] // 2) * 2].reshape(x.shape[0] // 2, -1))
        return self.enc_proj(x).astype(np.float32), (np.stack(hs), np.stack(cs))

    # -- predictor and joiner -------------------------------------------------------------
    def _decode_batch(self, contexts: np.ndarray) -> np.ndarray:
        emb = self.embedding[contexts]  # (N, K, D)
        D, group, K = self.conv.shape
        G = D // group
        # grouped causal conv with output length 1: out[o] = sum_{j,k} w[o, j, k] emb[k, g(o)*4+j]
        e = emb.transpose(0, 2, 1).reshape(-1, G, group, K)  # (N, G, group_in, K)
        w = self.conv.reshape(G, group, group, K)  # (G, out_in_group, in_in_group, K)
        out = np.einsum("ngjk,gojk->ngo", e, w).reshape(-1, D)
        return self.dec_proj(np.maximum(out, 0.0)).astype(np.float32)

    def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        x = np.tanh(np.asarray(enc, np.float32) + np.asarray(dec, np.float32))
        shape = x.shape
        return self.out(x.reshape(-1, shape[-1])).reshape(*shape[:-1], -1).astype(np.float32)

    def macs_per_frame(self) -> dict[str, float]:
        """Encoder multiply-adds per 10 ms feature frame, as this kernel performs them."""
        rates = []
        for i in range(self.num_layers):
            fast = self.reduce_after == 0 or i < self.reduce_after
            rates.append(1.0 / (self.stack if fast else self.subsampling))
        enc = self.input_proj.macs / self.stack
        for (w_ih, w_hh, w_hr, _), r in zip(self.layers, rates, strict=True):
            enc += r * (w_ih.macs + w_hh.macs + (w_hr.macs if w_hr is not None else 0))
        if self.reduce_proj is not None:
            enc += self.reduce_proj.macs / self.subsampling
        enc += self.enc_proj.macs / self.subsampling
        return {"encoder": enc, "joiner": float(self.out.macs)}
