"""Matrix products that skip zero weights, compiled with numba.

A weight matrix pruned in row segments of ``bc`` inputs (blocks 1×bc) is stored CSR-like over
those segments: ``indptr`` per output row, the segment index of every kept segment, and its
``bc`` values contiguous. Each kept segment is then a short dense dot product that the compiler
vectorises, and whole pruned segments cost nothing.

Measured on this project's 2-core x86 machines (1280×320 LSTM gate matrix, one frame): scipy's
CSR product runs 8-12x slower than dense BLAS at 0 % sparsity and never catches up before 90 %;
an unstructured (bc = 1) or 8-wide kernel here is still latency-bound on the scattered loads;
segments of 32 inputs are what beats BLAS from about 70 % sparsity on. The benchmark
(``benchmarks/compression.py``) measures where it wins on the actual model.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True, boundscheck=False, nogil=True)
def _spmm(indptr, indices, values, bc, x, out):  # pragma: no cover - compiled
    T = x.shape[0]
    R = indptr.shape[0] - 1
    for t in range(T):
        xt = x[t]
        for r in range(R):
            acc = np.float32(0.0)
            for k in range(indptr[r], indptr[r + 1]):
                c0 = indices[k] * bc
                xs = xt[c0 : c0 + bc]
                vs = values[k * bc : k * bc + bc]
                s = np.float32(0.0)
                for j in range(bc):
                    s += vs[j] * xs[j]
                acc += s
            out[t, r] = acc


class BlockSparseMatrix:
    """``W`` (R, C) keeping only its non-zero 1×bc row segments; ``matmul(x)`` = x Wᵀ."""

    def __init__(self, w: np.ndarray, bc: int) -> None:
        w = np.asarray(w, np.float32)
        R, C = w.shape
        if C % bc:
            raise ValueError(f"{C} columns do not split into segments of {bc}")
        seg = w.reshape(R, C // bc, bc)
        keep = (seg != 0).any(axis=2)
        self.shape = (R, C)
        self.bc = bc
        self.indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
        self.indices = np.nonzero(keep)[1].astype(np.int64)
        self.values = np.ascontiguousarray(seg[keep].reshape(-1))
        self.nnz = int(self.values.size)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty((x.shape[0], self.shape[0]), np.float32)
        _spmm(self.indptr, self.indices, self.values, self.bc, x, out)
        return out
