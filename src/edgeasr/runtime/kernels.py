"""Matrix products that skip zero weights, compiled with numba.

A weight matrix ``W`` (R, C) pruned in blocks of ``br`` consecutive output rows × one input
(``br×1``, see ``compress.sparsity``) is stored column by column: for each input ``c`` the
offsets of the output rows of its kept blocks and their ``br`` values, contiguous. ``y = x Wᵀ`` is
then, for every input and kept block, ``y[r : r + br] += values · x[c]``: a broadcast, one vector
load, one fused multiply-add and one vector store per block. Consecutive blocks write different
rows, so there is no reduction chain to wait on, and pruned blocks cost nothing. Any pattern runs
at ``br = 1`` (unstructured pruning); row blocks are what lets the CPU use its vector width.

Two compiler details decide the speed, both measured on this project's 2-core x86 machines
(``benchmarks/compression.py`` prints the table):

- numba compiles with LLVM's SLP vectoriser off by default. The block body is straight-line code
  over ``br`` adjacent floats, which only that pass turns into vector instructions, so the
  kernels are compiled with it on (3-4x faster). The body loads every value before it stores
  any, because the compiler cannot prove that ``values`` and ``y`` do not overlap.
- Indices are unsigned, so numba emits no negative-index wrap-around checks (which keep the
  code scalar), and no array views are made inside the loop (each costs reference counting).

Measured before this kernel: a CSR-over-row-segments kernel (blocks 1×bc, a dot product per
segment) was 8-12x slower than dense BLAS for one frame at 0 % sparsity and only won at 90 %
(1×8) or 70 % (1×32, which cost far too much accuracy in a short fine-tune).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numba import njit
from numba.core import config as numba_config

ROW_BLOCKS = (1, 2, 4, 8, 16)

# The highest share of kept weights at which skipping zeros still beats dense BLAS, per row-block
# height: the crossovers of the kernel table that ``benchmarks/compression.py`` prints (one frame,
# the recurrent product that dominates a streaming LSTM; 1280×320, this project's 2-core x86
# machines). Not measured for 2×1, so it gets 1×1's conservative bound.
ZERO_SKIP_MAX_DENSITY = {1: 0.10, 2: 0.10, 4: 0.30, 8: 0.50, 16: 0.50}


def row_block_density(w: np.ndarray, br: int) -> float:
    """Share of the ``br×1`` blocks of ``w`` (R, C) that hold a non-zero weight."""
    R, C = w.shape
    return float((w.reshape(R // br, br, C) != 0).any(axis=1).mean()) if w.size else 0.0


def zero_skip_pays(w: np.ndarray, br: int) -> bool:
    """Whether the zero-skipping kernel is expected to beat dense BLAS on ``w`` in ``br×1`` blocks.

    A rule from measured crossovers rather than a timing at load, so a model always runs the same
    kernels (and gives the same transcripts) wherever it is loaded.
    """
    return row_block_density(w, br) <= ZERO_SKIP_MAX_DENSITY[br] + 1e-3


_BODY = """
def spmm(colptr, rows, values, x, out):
    for t in range(x.shape[0]):
        xt = x[t]
        y = out[t]
        y[:] = 0
        for c in range(colptr.shape[0] - 1):
            xc = xt[c]
            for k in range(colptr[c], colptr[c + 1]):
                r = rows[k]
                b = k * U({br})
{loads}
{stores}
"""


@contextmanager
def _slp_vectorize() -> Iterator[None]:
    """Compile with LLVM's SLP vectoriser on (numba's ``NUMBA_SLP_VECTORIZE``), for this block."""
    old = numba_config.SLP_VECTORIZE
    numba_config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba_config.SLP_VECTORIZE = old


@functools.cache
def _kernel(br: int):
    """The compiled product for blocks of ``br`` rows (compiled once per process)."""
    pad = " " * 16
    loads = "\n".join(f"{pad}v{j} = values[b + U({j})]; y{j} = y[r + U({j})]" for j in range(br))
    stores = "\n".join(f"{pad}y[r + U({j})] = y{j} + v{j} * xc" for j in range(br))
    ns: dict = {"U": np.uint64}
    exec(compile(_BODY.format(br=br, loads=loads, stores=stores), f"<spmm_{br}x1>", "exec"), ns)
    sig = "void(uint64[::1], uint64[::1], float32[::1], float32[:, ::1], float32[:, ::1])"
    with _slp_vectorize():
        return njit(sig, fastmath=True, boundscheck=False, nogil=True)(ns["spmm"])


class BlockSparseMatrix:
    """``W`` (R, C) keeping only its non-zero ``br×1`` blocks; ``matmul(x)`` = x Wᵀ."""

    def __init__(self, w: np.ndarray, br: int) -> None:
        w = np.asarray(w, np.float32)
        if w.ndim != 2:
            raise ValueError(f"a weight matrix must be 2-D, got shape {w.shape}")
        R, C = w.shape
        if br not in ROW_BLOCKS:
            raise ValueError(f"row block must be one of {ROW_BLOCKS}, got {br}")
        if R % br:
            raise ValueError(f"{R} rows do not split into blocks of {br}")
        blocks = w.reshape(R // br, br, C).transpose(2, 0, 1)  # (C, R/br, br)
        keep = (blocks != 0).any(axis=2)
        self.shape = (R, C)
        self.br = br
        self.colptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.uint64)
        cols, groups = np.nonzero(keep)
        self.rows = (groups * br).astype(np.uint64)
        self.values = np.ascontiguousarray(blocks[cols, groups].reshape(-1), dtype=np.float32)
        self.nnz = int(self.values.size)  # stored weights: kept blocks × br
        self._spmm = _kernel(br)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.shape[1]:
            raise ValueError(f"input of shape {x.shape} does not match {self.shape[1]} columns")
        out = np.empty((x.shape[0], self.shape[0]), np.float32)
        self._spmm(self.colptr, self.rows, self.values, x, out)
        return out
