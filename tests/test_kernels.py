"""The zero-skipping kernel against dense products, for every row block it compiles."""

from __future__ import annotations

import numpy as np
import pytest

from edgeasr.runtime.kernels import ROW_BLOCKS, BlockSparseMatrix


def _block_pruned(rng, R: int, C: int, br: int, sparsity: float) -> np.ndarray:
    keep = np.repeat(rng.random((R // br, C)) >= sparsity, br, axis=0)
    return (rng.standard_normal((R, C)) * keep).astype(np.float32)


@pytest.mark.parametrize("br", ROW_BLOCKS)
@pytest.mark.parametrize("sparsity", [0.0, 0.7, 1.0])
def test_block_sparse_product_equals_dense(br, sparsity):
    rng = np.random.default_rng(br)
    w = _block_pruned(rng, 64, 48, br, sparsity)
    w[:, 5] = 0  # an input with no kept block at all
    m = BlockSparseMatrix(w, br)
    blocks_kept = int((w.reshape(64 // br, br, 48) != 0).any(axis=1).sum())
    assert m.nnz == blocks_kept * br  # zero blocks are not stored
    for T in (1, 5):
        x = rng.standard_normal((T, 48)).astype(np.float32)
        np.testing.assert_allclose(m.matmul(x), x @ w.T, rtol=1e-5, atol=1e-5)


def test_unstructured_zeros_run_with_single_rows():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 24)).astype(np.float32)
    w[rng.random(w.shape) < 0.8] = 0
    m = BlockSparseMatrix(w, 1)
    assert m.nnz == np.count_nonzero(w)
    x = rng.standard_normal((3, 24)).astype(np.float32)
    np.testing.assert_allclose(m.matmul(x), x @ w.T, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_refused():
    w = np.ones((12, 8), np.float32)
    with pytest.raises(ValueError, match="row block must be one of"):
        BlockSparseMatrix(w, 3)
    with pytest.raises(ValueError, match="do not split into blocks of 8"):
        BlockSparseMatrix(w, 8)
    with pytest.raises(ValueError, match="does not match 8 columns"):
        BlockSparseMatrix(w, 4).matmul(np.ones((1, 7), np.float32))
