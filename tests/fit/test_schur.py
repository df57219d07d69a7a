from __future__ import annotations

import numpy as np
import pytest

from tying.fit import schur


def problem(k=5, m=3, n_local=2, n_global=4, seed=0):
    """Random per-data-set blocks; global columns pick from n_global parameters."""
    rng = np.random.default_rng(seed)
    p = m + n_local
    j = rng.normal(size=(k, 12, p))
    h = j.transpose(0, 2, 1) @ j
    g = rng.normal(size=(k, p))
    gidx = np.stack([rng.choice(n_global, size=m, replace=False) for _ in range(k)])
    lidx = n_global + np.arange(k)[:, None] * n_local + np.arange(n_local)
    index = np.concatenate([gidx, lidx], axis=1)
    n_phys = n_global + k * n_local
    dense = np.zeros((n_phys, n_phys))
    grad = np.zeros(n_phys)
    for i in range(k):
        dense[np.ix_(index[i], index[i])] += h[i]
        grad[index[i]] += g[i]
    return h, g, index, n_global, dense, grad


@pytest.mark.parametrize("n_local", [0, 1, 3])
def test_damped_solve_equals_dense_solve(n_local):
    h, g, index, m, dense, grad = problem(n_local=n_local)
    damping = np.linspace(0.1, 1.0, dense.shape[0])
    step = schur.solve(h, g, index, m, damping)
    np.testing.assert_allclose(step, np.linalg.solve(dense + np.diag(damping), -grad), rtol=1e-9)


def test_frozen_parameters_do_not_move_and_the_rest_solve_the_reduced_system():
    h, g, index, m, dense, grad = problem()
    frozen = np.zeros(dense.shape[0], dtype=bool)
    frozen[[1, 6]] = True
    step = schur.solve(h, g, index, m, 0.0, frozen)
    keep = ~frozen
    expected = np.linalg.solve(dense[np.ix_(keep, keep)], -grad[keep])
    assert np.all(step[frozen] == 0)
    np.testing.assert_allclose(step[keep], expected, rtol=1e-9)


def test_covariance_equals_dense_inverse():
    h, g, index, m, dense, grad = problem()
    cov_global, cov_logical = schur.covariance(h, index, m)
    full = np.linalg.inv(dense)
    np.testing.assert_allclose(cov_global, full[:m, :m], rtol=1e-9, atol=1e-12)
    for i in range(len(index)):
        np.testing.assert_allclose(
            cov_logical[i], full[np.ix_(index[i], index[i])], rtol=1e-8, atol=1e-12
        )


def test_singular_normal_matrix_raises():
    h, g, index, m, dense, grad = problem()
    unused = index == 0  # global parameter 0 stops changing the model
    h[unused[:, :, None] | unused[:, None, :]] = 0.0
    with pytest.raises(np.linalg.LinAlgError):
        schur.covariance(h, index, m)
    h, g, index, m, dense, grad = problem()
    h[0, -1, :] = h[0, :, -1] = 0.0  # a local parameter of data set 0 has no effect
    with pytest.raises(np.linalg.LinAlgError):
        schur.covariance(h, index, m)


def _dense_null(dense):
    d = np.sqrt(np.diag(dense))
    _, vec = np.linalg.eigh(dense / np.outer(d, d))
    return vec[:, 0] / np.max(np.abs(vec[:, 0]))


def test_weakest_finds_a_singular_local_block_and_a_global_null_direction():
    # a local column of data set 2 doubles another: its block is singular, named alone
    h, g, index, m, dense, grad = problem()
    h[2, -1, :] = 2 * h[2, -2, :]
    h[2, :, -1] = 2 * h[2, :, -2]
    h[2, -1, -1] = 4 * h[2, -2, -2]
    rows, directions = schur.weakest(h, index, m, dense.shape[0])
    assert rows.tolist() == [2]
    assert set(np.flatnonzero(np.abs(directions[0]) > 0.1)) == set(index[2, -2:])
    # a global column that doubles another everywhere: the Schur complement's null direction,
    # extended to the locals, is the dense matrix's (up to sign)
    h, g, index, m, dense, grad = problem(k=4, m=2, n_global=2)
    j = np.random.default_rng(1).normal(size=(4, 12, 4))
    j[:, :, 1] = 2 * j[:, :, 0]
    h = j.transpose(0, 2, 1) @ j
    index[:, :2] = [0, 1]
    dense = np.zeros_like(dense[:10, :10])
    for i in range(4):
        dense[np.ix_(index[i], index[i])] += h[i]
    rows, directions = schur.weakest(h, index, 2, 10)
    expected = _dense_null(dense)
    assert rows.size == 0
    np.testing.assert_allclose(np.abs(directions[0]), np.abs(expected), atol=1e-6)
    assert np.sign(directions[0][0] * expected[0]) * directions[0] == pytest.approx(
        expected, abs=1e-6
    )
