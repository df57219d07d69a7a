"""Bands and predictions beside an exactly degenerate pair read from the pseudo-inverse
(review 60).

``amp·exp(-(x - cen)/wid) + off`` with ``amp``, ``cen`` local: every prediction is
estimable, so its standard error is the same whichever redundant parameter is held.
Stop 60 read the estimable parameters' entries from the pseudo-inverse but kept the
inverse's rounding noise in the rows of ``amp`` and ``cen``; ``J C Jᵀ`` mixed the two and
``predict(..., stderr=True)`` read 35 % low at x = 0.5 (43 % before stop 60), no word.
"""

import warnings

import numpy as np
import pytest

from tying.fit import FitWarning, GlobalFit


def _data():
    rng = np.random.default_rng(1)
    data = []
    for n, (a, c, o) in zip([25, 40, 31], [(3.0, 0.3, 0.5), (2.0, 0.1, -0.2), (4.0, 0.5, 0.1)]):
        x = np.linspace(0, 3, n)
        sig = 0.02 * (1 + rng.random(n))
        data.append((x, a * np.exp(-(x - c) / 0.7) + o + rng.normal(0, 1, n) * sig, sig))
    return data


def _model(x, amp, cen, wid, off):
    return amp * np.exp(-(x - cen) / wid) + off


def test_a_band_beside_a_degenerate_pair_is_the_held_fit_s():
    data = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = GlobalFit(
            _model,
            data,
            shared=["wid"],
            local=["amp", "cen", "off"],
            init={"amp": 2, "cen": 0.0, "wid": 0.5, "off": 0},
            solver="trf",
            scale_covar=False,
        ).run()
    if res.covariance is None:  # rounding took the singular route on this machine
        pytest.skip("the inverse was singular to rounding: no covariance to read")
    assert "fully correlated" in res.message
    wid = res.values["wid"]
    # exact: hold each cen at its fitted value; (wid, amp_k, off_k) is full rank, linear algebra
    rows = []
    for k, (x, _, s) in enumerate(data):
        p = res.params(k)
        e = np.exp(-(x - p["cen"]) / wid)
        rows.append(
            np.column_stack([p["amp"] * e * (x - p["cen"]) / wid**2, e, np.ones_like(x)])
            / s[:, None]
        )
    dense = np.zeros((sum(len(r) for r in rows), 7))
    start = 0
    for k, r in enumerate(rows):
        dense[start : start + len(r), [0, 1 + 2 * k, 2 + 2 * k]] = r
        start += len(r)
    cov = np.linalg.inv(dense.T @ dense)
    xs = np.linspace(0, 3, 7)
    for k in range(3):
        p = res.params(k)
        e = np.exp(-(xs - p["cen"]) / wid)
        j = np.column_stack([p["amp"] * e * (xs - p["cen"]) / wid**2, e, np.ones_like(xs)])
        sub = cov[np.ix_([0, 1 + 2 * k, 2 + 2 * k], [0, 1 + 2 * k, 2 + 2 * k])]
        exact = np.sqrt(np.einsum("np,pq,nq->n", j, sub, j))
        _, ours = res.predict(k, xs, stderr=True)
        np.testing.assert_allclose(ours, exact, rtol=1e-5)


def test_a_fit_past_the_dense_limit_still_reads_the_pair_s_errors_from_the_svd():
    # 60 data sets of 400 points, 3 locals each: 60·400·180 = 4.3e6 entries passed
    # null_space.MAX_DENSE, and every standard error fell back to the inverse's noise
    # (a, b 4.9 % off at 60 x 400; 3.2 % at 120 x 100 where 115 x 100 read exact)
    eps, n, k = 1e-6, 400, 60
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, n)
    data = [(x, 2 * x + 1 + rng.normal(0, 0.01, n), np.full(n, 0.01)) for _ in range(k)]

    def model(x, a, b, c):
        return a * x + b * (x + eps * x**2) + c

    with pytest.warns(FitWarning, match="strongly correlated"):  # no null direction
        res = GlobalFit(
            model,
            data,
            local=["a", "b", "c"],
            init={"a": 1, "b": 0.5, "c": 0},
            solver="trf",
            scale_covar=False,
        ).run()
    design = np.column_stack([x, x**2, np.ones_like(x)]) / 0.01
    t = np.array([[1, -1 / eps, 0], [0, 1 / eps, 0], [0, 0, 1]])
    exact = np.sqrt(np.diag(t @ np.linalg.inv(design.T @ design) @ t.T))
    ours = np.array([[res.stderrs(i)[p] for p in "abc"] for i in range(k)])
    np.testing.assert_allclose(ours, np.broadcast_to(exact, ours.shape), rtol=1e-5)
