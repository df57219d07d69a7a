from __future__ import annotations

import numpy as np

from tests.fit.helpers import gauss_torch, peaks
from tying.fit import GlobalFit, jacobian


def global_residual(fit, theta):
    data, pm, ev = fit._prepare()
    return jacobian.residuals(ev.predict(theta), data)[data.mask]


def test_sparse_jacobian_matches_dense_finite_differences():
    datasets, _ = peaks(k=4, n=12, lengths=[12, 9, 12, 5])
    for i, (x, y, s) in enumerate(datasets):
        datasets[i] = (x, y, s, {"inst": "ab"[i % 2]})

    def model(x, center, width, amplitude, zero):
        return gauss_torch(x - zero, center, width, amplitude)

    fit = GlobalFit(
        model,
        datasets,
        shared=["center", "width"],
        per_group={"zero": "inst"},
        local=["amplitude"],
        init={"center": 0.1, "width": 0.9, "amplitude": 1.5, "zero": 0.05},
    )
    theta = fit.parameter_map.x0
    sparse = fit.jacobian(theta)
    assert sparse.shape == (38, 2 + 2 + 4)
    assert sparse.nnz == 38 * 4  # every point reads exactly 4 parameters
    dense = np.zeros(sparse.shape)
    for j in range(len(theta)):
        h = 1e-6
        up, dn = theta.copy(), theta.copy()
        up[j] += h
        dn[j] -= h
        dense[:, j] = (global_residual(fit, up) - global_residual(fit, dn)) / (2 * h)
    np.testing.assert_allclose(sparse.toarray(), dense, atol=1e-7)
    pattern = fit.jacobian_sparsity().toarray()
    assert np.array_equal(pattern != 0, (sparse.toarray() != 0) | (pattern != 0))
    # the zero of group "b" is read by data sets 1 and 3 only
    rows_b = np.r_[np.arange(12, 21), np.arange(33, 38)]
    assert set(np.flatnonzero(pattern[:, 3])) == set(rows_b)


def test_normal_blocks_scatter_to_jtj():
    rng = np.random.default_rng(1)
    jw = rng.normal(size=(3, 7, 2))
    r = rng.normal(size=(3, 7))
    h, g = jacobian.normal_blocks(jw, r)
    for k in range(3):
        np.testing.assert_allclose(h[k], jw[k].T @ jw[k])
        np.testing.assert_allclose(g[k], jw[k].T @ r[k])
