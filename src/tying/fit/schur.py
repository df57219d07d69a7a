"""Block-arrowhead normal equations, solved by the Schur complement in O(K).

Order the physical vector ``[global | local_1 | ... | local_K]`` (global =
shared and per-group parameters, M of them; L local ones per data set). The
normal matrix ``JᵀJ`` is then a block arrowhead:

    [ A    B_1  B_2 ... ]        A   = Σ_k A_k            (M × M, dense)
    [ B_1ᵀ C_1          ]        B_k = data set k's global × local block
    [ B_2ᵀ      C_2     ]        C_k = its local × local block (L × L)
    [ ...            ...]

Eliminating the locals leaves the M × M Schur complement
``S = A - Σ_k B_k C_k⁻¹ B_kᵀ``: one dense M × M solve plus K tiny L × L ones,
O(K·P³ + M³) instead of the O((M + K·L)³) of a dense solve or the many
sweeps of an iterative one. Every block here is computed from the
per-data-set normal blocks ``H_k`` (P × P), vectorised over data sets.

The same elimination gives the covariance: the global block of
``(JᵀJ)⁻¹`` is ``S⁻¹``, and each data set's local block is
``C_k⁻¹ + E_k S⁻¹ E_kᵀ`` with ``E_k = C_k⁻¹ B_kᵀ``.

Example:
    >>> import numpy as np
    >>> from tying.fit.schur import solve, covariance
    >>> rng = np.random.default_rng(0)
    >>> J = rng.normal(size=(2, 5, 2))                  # K=2 data sets, P=2 (1 global, 1 local)
    >>> H = J.transpose(0, 2, 1) @ J
    >>> g = rng.normal(size=(2, 2))
    >>> index = np.array([[0, 1], [0, 2]])              # physical: [shared, local_0, local_1]
    >>> dense = np.zeros((3, 3)); grad = np.zeros(3)
    >>> for k in range(2):
    ...     dense[np.ix_(index[k], index[k])] += H[k]; grad[index[k]] += g[k]
    >>> step = solve(H, g, index, n_global=1, damping=0.0)
    >>> bool(np.allclose(step, np.linalg.solve(dense, -grad)))
    True
    >>> cov_global, _ = covariance(H, index, n_global=1)
    >>> bool(np.allclose(cov_global, np.linalg.inv(dense)[:1, :1]))
    True
"""

from __future__ import annotations

import numpy as np


def _split(h: np.ndarray, g: np.ndarray | None, m: int):
    a, b, c = h[:, :m, :m], h[:, :m, m:], h[:, m:, m:]
    return a, b, c, (None if g is None else (g[:, :m], g[:, m:]))


def _scatter_matrix(blocks: np.ndarray, gidx: np.ndarray, n_global: int) -> np.ndarray:
    """Σ_k P_kᵀ blocks_k P_k for (K, m, m) blocks at global indices gidx (K, m)."""
    flat = (gidx[:, :, None] * n_global + gidx[:, None, :]).ravel()
    out = np.bincount(flat, weights=blocks.ravel(), minlength=n_global * n_global)
    return out.reshape(n_global, n_global)


def diagonal(h: np.ndarray, index: np.ndarray, n_physical: int) -> np.ndarray:
    """The diagonal of the global normal matrix ``JᵀJ`` (length ``n_physical``)."""
    d = np.diagonal(h, axis1=1, axis2=2)  # (K, P)
    return np.bincount(index.ravel(), weights=d.ravel(), minlength=n_physical)


def solve(
    h: np.ndarray,
    g: np.ndarray,
    index: np.ndarray,
    n_global: int,
    damping: np.ndarray | float,
    frozen: np.ndarray | None = None,
) -> np.ndarray:
    """Solve ``(JᵀJ + diag(damping)) δ = -Jᵀr`` by the Schur complement.

    Args:
        h: ``(K, P, P)`` per-data-set normal blocks, free logical order
            (the first ``m`` columns global, the rest local).
        g: ``(K, P)`` per-data-set gradients ``J_kᵀ r_k``.
        index: ``(K, P)`` physical index of each logical column; global
            columns index ``[0, n_global)``, local ones beyond.
        n_global: number of global physical parameters M.
        damping: added to the diagonal (scalar or one per physical parameter).
        frozen: optional boolean mask over the physical vector; frozen entries
            get a zero step (parameters held at an active bound).

    Returns:
        The step δ over the physical vector.

    Raises:
        numpy.linalg.LinAlgError: when the damped system is singular.
    """
    k, p, _ = h.shape
    n_physical = int(index.max()) + 1 if index.size else 0
    n_physical = max(n_physical, n_global)
    m = int(np.sum(index[0] < n_global)) if k else 0
    lam = np.broadcast_to(np.asarray(damping, dtype=float), (n_physical,))
    h = h.copy()
    g = g.copy()
    if frozen is not None and frozen.any():
        keep = ~frozen[index]  # (K, P)
        h *= keep[:, :, None] & keep[:, None, :]
        g *= keep
        lam = np.where(frozen, 1.0, lam)
    # add the damping on each data set's local diagonal; the global one is added once, below
    ar = np.arange(m, p)
    h[:, ar, ar] += lam[index[:, m:]]
    a, b, c, (ga, gc) = _split(h, g, m)
    gidx = index[:, :m]
    step = np.zeros(n_physical)
    if p > m:
        # E_k = C_k⁻¹ B_kᵀ and e_k = C_k⁻¹ c_k in one batched solve
        rhs = np.concatenate([b.transpose(0, 2, 1), gc[:, :, None]], axis=2)  # (K, L, m+1)
        sol = np.linalg.solve(c, rhs)
        e_mat, e_vec = sol[:, :, :m], sol[:, :, m]
        schur = a - b @ e_mat  # (K, m, m)
        rhs_g = ga - (b @ e_vec[:, :, None])[:, :, 0]  # (K, m)
    else:
        schur, rhs_g = a, ga
    if n_global:
        s = _scatter_matrix(schur, gidx, n_global)
        s[np.diag_indices(n_global)] += lam[:n_global]
        rhs = np.bincount(gidx.ravel(), weights=rhs_g.ravel(), minlength=n_global)
        step[:n_global] = np.linalg.solve(s, -rhs)
    if p > m:
        dg = step[gidx] if n_global else np.zeros((k, 0))  # (K, m)
        dl = -(e_vec + (e_mat @ dg[:, :, None])[:, :, 0])  # (K, L)
        step[index[:, m:].ravel()] = dl.ravel()
    if frozen is not None:
        step[frozen] = 0.0
    return step


def covariance(h: np.ndarray, index: np.ndarray, n_global: int) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled covariance ``(JᵀJ)⁻¹``: its global block, and each data set's logical block.

    Args:
        h: ``(K, P, P)`` per-data-set normal blocks (free logical order).
        index: ``(K, P)`` physical indices.
        n_global: number of global physical parameters M.

    Returns:
        ``(cov_global (M, M), cov_logical (K, P, P))``: the second is the
        covariance of each data set's free logical parameters (global ones
        first), read from the full inverse.

    Raises:
        numpy.linalg.LinAlgError: when ``JᵀJ`` is singular (a parameter that
            does not change the model, or two that change it the same way).
    """
    k, p, _ = h.shape
    m = int(np.sum(index[0] < n_global)) if k else 0
    a, b, c, _ = _split(h, None, m)
    gidx = index[:, :m]
    if p > m:
        c_inv = np.linalg.inv(c)  # (K, L, L)
        e_mat = c_inv @ b.transpose(0, 2, 1)  # (K, L, m)
        schur = a - b @ e_mat
    else:
        schur = a
    cov_global = np.zeros((n_global, n_global))
    if n_global:
        cov_global = np.linalg.inv(_scatter_matrix(schur, gidx, n_global))
        cov_global = 0.5 * (cov_global + cov_global.T)
    cg = cov_global[gidx[:, :, None], gidx[:, None, :]]  # (K, m, m)
    out = np.empty((k, p, p))
    out[:, :m, :m] = cg
    if p > m:
        cross = -cg @ e_mat.transpose(0, 2, 1)  # (K, m, L)
        out[:, :m, m:] = cross
        out[:, m:, :m] = cross.transpose(0, 2, 1)
        out[:, m:, m:] = c_inv + e_mat @ cg @ e_mat.transpose(0, 2, 1)
    if not np.all(np.isfinite(out)) or not np.all(np.isfinite(cov_global)):
        raise np.linalg.LinAlgError("the normal matrix is singular")
    return cov_global, out


def weakest(
    h: np.ndarray, index: np.ndarray, n_global: int, n_physical: int, tol: float = 1e-12
) -> tuple[np.ndarray, np.ndarray]:
    """The combinations of parameters the data determine least: what a singular fit names.

    Works on the column-scaled normal matrix ``D^-½ JᵀJ D^-½`` (unit diagonal, free of
    units), by the same block elimination as :func:`covariance`, so it costs O(K):

    - each data set's local block ``C_k`` whose smallest eigenvalue is below ``tol``
      (x constant in that data set, so its local slope and offset act alike; a local
      parameter with no effect there) gives that eigenvector, zero elsewhere: a
      direction along which the whole ``JᵀJ`` is singular too;
    - when no local block is, the smallest eigenvector ``g`` of the Schur complement,
      extended to the locals by ``l_k = -C_k⁻¹ B_kᵀ g`` (with no global parameter, the
      local block with the smallest eigenvalue).

    Args:
        h: ``(K, P, P)`` per-data-set normal blocks (free logical order).
        index: ``(K, P)`` physical indices.
        n_global: number of global physical parameters M.
        n_physical: length of the physical vector.
        tol: a scaled eigenvalue below this marks a local block as singular.

    Returns:
        ``(datasets, directions)``: the data sets whose local block is singular (empty
        when the direction comes from the Schur complement), and the directions, one
        per row ``(rows, n_physical)``, largest entry ±1, over the scaled physical
        vector (multiply by ``1/‖J column‖`` for the parameters' own units).

    Example:
        >>> import numpy as np
        >>> j = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])   # one local block, x constant
        >>> ds, d = weakest((j.T @ j)[None], np.array([[0, 1]]), n_global=0, n_physical=2)
        >>> ds.tolist(), np.round(np.abs(d), 3).tolist()
        ([0], [[1.0, 1.0]])
    """
    k, p, _ = h.shape
    m = int(np.sum(index[0] < n_global)) if k else 0
    d = np.sqrt(diagonal(h, index, n_physical))
    d = np.where(d > 0, d, 1.0)  # a zero column stays zero: an eigenvalue 0, named
    ds = d[index]  # (K, P)
    hs = h / (ds[:, :, None] * ds[:, None, :])
    a, b, c, _ = _split(hs, None, m)
    gidx = index[:, :m]
    out = []
    if p > m:
        lam, vec = np.linalg.eigh(c)  # ascending eigenvalues, (K, L), (K, L, L)
        singular = np.flatnonzero(lam[:, 0] < tol)
        if not singular.size and not n_global:  # only local blocks: the weakest of them
            singular = np.array([int(np.argmin(lam[:, 0]))])
        for i in singular:
            v = np.zeros(n_physical)
            v[index[i, m:]] = vec[i, :, 0]
            out.append(v)
        if singular.size:
            return singular, np.stack(out) / np.max(np.abs(out), axis=1, keepdims=True)
        e_mat = np.linalg.solve(c, b.transpose(0, 2, 1))  # (K, L, m)
        schur = a - b @ e_mat
    else:
        schur = a
    v = np.zeros(n_physical)
    if n_global:
        _, gvec = np.linalg.eigh(_scatter_matrix(schur, gidx, n_global))
        v[:n_global] = gvec[:, 0]
        if p > m:
            v[index[:, m:].ravel()] = -(e_mat @ gvec[gidx, 0][:, :, None])[:, :, 0].ravel()
    return np.array([], dtype=np.int64), v[None] / np.max(np.abs(v))
