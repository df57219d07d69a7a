"""The Jacobian of a global fit: per-data-set dense blocks, assembled sparse.

Data set ``k`` reads only P logical parameters, so its rows of the global
Jacobian ``J`` (N points × n_physical parameters) have exactly P non-zeros,
in the columns ``pmap.index[k]``: the shared columns are dense, the group
columns block-structured, the local columns block-diagonal. We keep the
blocks ``(K, n_max, P)`` and build from them either

- the sparse matrix itself (:func:`assemble`, CSR, for ``scipy.optimize.least_squares``
  and for users), in O(N·P) with no Python loop; or
- the per-data-set normal blocks ``H_k = J_kᵀ J_k`` (P × P) and ``g_k = J_kᵀ r_k``
  (:func:`normal_blocks`), which is all the Schur-complement solver needs.

Residuals are ``r = (model - y) / σ`` (so ``J = d model / dθ / σ``), zero on
padded points.

Example:
    >>> import numpy as np
    >>> from tying.fit.datasets import stack
    >>> from tying.fit.roles import ParameterMap
    >>> from tying.fit.jacobian import sparsity
    >>> data = stack([(np.arange(2.0), np.zeros(2)), (np.arange(3.0), np.zeros(3))])
    >>> pmap = ParameterMap(None, data.metadata, shared=["c"], local=["a"],
    ...                     init={"c": 0.0, "a": 1.0})
    >>> sparsity(data, pmap).toarray().astype(int).tolist()
    [[1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 1], [1, 0, 1]]
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tying.fit.datasets import StackedData
from tying.fit.roles import ParameterMap


def residuals(model: np.ndarray, data: StackedData) -> np.ndarray:
    """Weighted residuals ``(model - y) / σ`` as ``(K, n_max)``, 0 on padded points.

    Example:
        >>> import numpy as np
        >>> from tying.fit.datasets import stack
        >>> data = stack([(np.arange(2.0), np.array([1.0, 2.0]), 0.5)])
        >>> residuals(np.array([[2.0, 2.0]]), data).tolist()
        [[2.0, 0.0]]
    """
    return np.where(data.mask, (model - data.y) * data.weight, 0.0)


def weighted(jac: np.ndarray, data: StackedData) -> np.ndarray:
    """The residual Jacobian blocks ``(K, n_max, P)``: model derivatives / σ, 0 on padded points."""
    w = data.weight[:, :, None]
    return np.where(data.mask[:, :, None], jac * w, 0.0)


def normal_blocks(jw: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-data-set ``H_k = J_kᵀ J_k`` ``(K, P, P)`` and ``g_k = J_kᵀ r_k`` ``(K, P)``.

    The global normal matrix and gradient are their scatter-sums over
    ``pmap.index``; the solver never forms them whole.

    Example:
        >>> import numpy as np
        >>> H, g = normal_blocks(np.ones((1, 3, 2)), np.ones((1, 3)))
        >>> H.tolist(), g.tolist()
        ([[[3.0, 3.0], [3.0, 3.0]]], [[3.0, 3.0]])
    """
    jt = jw.transpose(0, 2, 1)  # (K, P, n_max)
    return jt @ jw, (jt @ r[:, :, None])[:, :, 0]


def gradient(g: np.ndarray, pmap: ParameterMap) -> np.ndarray:
    """The gradient of ½χ² over the physical vector: scatter-sum of the ``g_k``."""
    return np.bincount(pmap.index.ravel(), weights=g.ravel(), minlength=pmap.n_physical)


def assemble(jw: np.ndarray, data: StackedData, pmap: ParameterMap) -> sp.csr_matrix:
    """The global residual Jacobian as a CSR matrix ``(N, n_physical)``.

    Rows are the real points of every data set in order; each row holds P
    values, so this is O(N·P) time and memory.

    Example:
        >>> import numpy as np
        >>> from tying.fit.datasets import stack
        >>> from tying.fit.roles import ParameterMap
        >>> data = stack([(np.arange(2.0), np.zeros(2)), (np.arange(1.0), np.zeros(1))])
        >>> pmap = ParameterMap(None, data.metadata, shared=["c"], local=["a"],
        ...                     init={"c": 0.0, "a": 1.0})
        >>> blocks = np.arange(8.0).reshape(2, 2, 2)   # (K, n_max, P)
        >>> assemble(blocks, data, pmap).toarray().tolist()
        [[0.0, 1.0, 0.0], [2.0, 3.0, 0.0], [4.0, 0.0, 5.0]]
    """
    p = pmap.index.shape[1]
    values = jw[data.mask]  # (N, P), rows in data-set order
    rows_of = np.nonzero(data.mask)[0]  # data set of each row
    n = len(values)
    indices = pmap.index[rows_of].ravel()
    indptr = np.arange(0, n * p + 1, p)
    return sp.csr_matrix((values.ravel(), indices, indptr), shape=(n, pmap.n_physical))


def sparsity(data: StackedData, pmap: ParameterMap) -> sp.csr_matrix:
    """The non-zero pattern of the global Jacobian (1.0 where a point reads a parameter)."""
    ones = np.ones(data.y.shape + (pmap.index.shape[1],))
    return assemble(ones, data, pmap)
