"""The estimator contract: validation in fit, restarts, convergence, fixed parameters, sampling."""

from __future__ import annotations

import numpy as np
import pytest

from tying.hmm import GaussianHMM, NotFittedError

from .helpers import random_params

# fits here stop at a small n_iter on purpose (their numbers are what is tested); the
# budget's ConvergenceWarning is tested in test_review35.py and test_monitor.py
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")


def _data(seed=0):
    return random_params(np.random.default_rng(seed), 3, 2, lengths=(100, 60))


def test_init_stores_arguments_only_and_unfitted_use_is_an_error():
    m = GaussianHMM(3, ties={"means": "all"}, n_iter=7)
    assert m.ties == {"means": "all"} and m.n_iter == 7 and not hasattr(m, "ties_")
    with pytest.raises(NotFittedError, match=r"not fitted yet; call fit\(X, lengths\)"):
        m.score(np.zeros((3, 2)))
    with pytest.raises(AttributeError):
        _ = m.means_


def test_fit_returns_self_and_fitted_attributes_end_in_underscore():
    *_, X, lengths = _data()
    m = GaussianHMM(3, n_iter=3, random_state=0)
    assert m.fit(X, lengths) is m
    for name in ("startprob_", "transmat_", "means_", "covars_", "ties_", "history_", "n_iter_"):
        assert hasattr(m, name)


def test_restarts_keep_the_best_and_are_reproducible():
    *_, X, lengths = _data(1)
    single = [
        GaussianHMM(3, n_iter=15, random_state=s).fit(X, lengths).log_likelihood_ for s in range(3)
    ]
    best = GaussianHMM(3, n_iter=15, n_init=4, random_state=0).fit(X, lengths)
    again = GaussianHMM(3, n_iter=15, n_init=4, random_state=0).fit(X, lengths)
    assert best.log_likelihood_ == again.log_likelihood_
    assert np.array_equal(best.means_, again.means_)
    assert best.log_likelihood_ >= min(single)
    assert best.log_likelihood_ == max(best.history_)


def test_convergence_tolerance_stops_early():
    *_, X, lengths = _data(2)
    m = GaussianHMM(3, n_iter=500, tol=1e-2, random_state=0).fit(X, lengths)
    assert m.converged_ and m.n_iter_ < 500
    assert m.history_[-1] - m.history_[-2] < 1e-2


def test_parameters_not_listed_in_params_keep_their_start_values():
    start, A, means, var, X, lengths = _data(3)
    m = GaussianHMM(
        3,
        startprob_init=start,
        transmat_init=A,
        means_init=means,
        covars_init=var,
        params=["means", "covars"],
        n_iter=5,
    ).fit(X, lengths)
    assert np.array_equal(m.transmat_, A) and np.array_equal(m.startprob_, start)
    assert not np.allclose(m.means_, means)


def test_sample_is_reproducible_and_follows_the_model():
    m = GaussianHMM.from_params(
        [1.0, 0.0], [[0.0, 1.0], [1.0, 0.0]], [[-5.0], [5.0]], [[0.01], [0.01]]
    )
    X1, s1 = m.sample(50, random_state=3)
    X2, s2 = m.sample(50, random_state=3)
    assert np.array_equal(X1, X2) and np.array_equal(s1, s2)
    assert s1.tolist() == [0, 1] * 25  # the transition matrix alternates deterministically
    assert np.all(np.sign(X1[:, 0]) == np.where(s1 == 0, -1, 1))


def test_lengths_and_data_errors_come_from_fit():
    *_, X, lengths = _data(4)
    X = X.copy()
    X[130, 0] = np.nan
    with pytest.raises(
        ValueError, match=r"X contains nan at sequence 1, position 30 \(row 130 of X\)"
    ):
        GaussianHMM(3).fit(X, lengths)
    with pytest.raises(ValueError, match="lengths sum to 150 but X has 160 rows"):
        GaussianHMM(3).fit(X, [100, 50])


def test_a_failing_fit_leaves_the_fitted_model_unchanged():
    *_, X, lengths = _data(5)
    m = GaussianHMM(3, n_iter=3, random_state=0).fit(X, lengths)
    before = {k: getattr(m, k) for k in ("startprob_", "transmat_", "means_", "covars_")}
    score_before = m.score(X, lengths)
    bad = X.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="X contains inf"):
        m.fit(bad, lengths)
    with pytest.raises(ValueError, match="n_components must be a positive integer"):
        m.n_components = 0
        m.fit(X, lengths)
    m.n_components = 3
    for k, v in before.items():
        assert np.array_equal(getattr(m, k), v)
    assert m.score(X, lengths) == score_before


def test_hmmlearn_letters_and_our_names_select_the_same_parameters():
    start, A, means, var, X, lengths = _data(6)
    kw = dict(
        startprob_init=start, transmat_init=A, means_init=means, covars_init=var, n_iter=4, tol=-1
    )
    # letters make the model hmmlearn-style: its covars_prior default (1e-2) applies ...
    a = GaussianHMM(3, params="mc", **kw).fit(X, lengths)
    b = GaussianHMM(3, params=["means", "covars"], **kw).fit(X, lengths)
    assert not np.allclose(a.covars_, b.covars_, rtol=1e-9)
    # ... and with the prior set to ours (0) the two spellings fit the same model
    a0 = GaussianHMM(3, params="mc", covars_prior=0.0, **kw).fit(X, lengths)
    np.testing.assert_allclose(a0.covars_, b.covars_, rtol=1e-12)
    np.testing.assert_allclose(a0.means_, b.means_, rtol=1e-12)
    assert np.array_equal(a.transmat_, A) and np.array_equal(b.transmat_, A)
    with pytest.raises(ValueError, match=r"params='mx': unknown letter\(s\) \['x'\]"):
        GaussianHMM(3, params="mx").fit(X, lengths)
    with pytest.raises(ValueError, match=r"algorithm must be one of \('viterbi', 'map'\)"):
        GaussianHMM(3, algorithm="beam").fit(X, lengths)


def test_sample_continues_from_currstate_and_checks_it():
    m = GaussianHMM.from_params(
        [1.0, 0.0], [[0.0, 1.0], [1.0, 0.0]], [[-5.0], [5.0]], [[0.01], [0.01]]
    )
    _, s = m.sample(4, random_state=0, currstate=1)
    assert s.tolist() == [1, 0, 1, 0]
    with pytest.raises(ValueError, match=r"currstate must be a state 0..1, got 2"):
        m.sample(3, currstate=2)


def test_stationary_distribution_is_refused_when_it_is_not_unique():
    m = GaussianHMM.from_params([0.5, 0.5], np.eye(2), [[0.0], [1.0]], [[1.0], [1.0]])
    with pytest.raises(ValueError, match="2 eigenvalues equal to 1"):
        m.get_stationary_distribution()


def test_n_iter_zero_only_initialises_like_hmmlearn():
    *_, X, lengths = _data(7)
    m = GaussianHMM(3, n_iter=0, random_state=0).fit(X, lengths)
    assert m.n_iter_ == 0 and m.history_ == [] and not m.converged_
    assert np.isfinite(m.score(X, lengths))


def test_fitting_more_free_parameters_than_data_is_logged(caplog):
    X = np.random.default_rng(0).normal(size=(5, 3))
    with caplog.at_level("WARNING", logger="tying.hmm.base"):
        GaussianHMM(3, "full", n_iter=1, random_state=0).fit(X)
    assert any("will result in a degenerate solution" in r.getMessage() for r in caplog.records)


def test_init_params_overwriting_an_assigned_attribute_is_logged(caplog):
    *_, X, lengths = _data(8)
    m = GaussianHMM(3, init_params="m", n_iter=1, random_state=0)
    m.means_ = np.zeros((3, 2))
    with caplog.at_level("WARNING", logger="tying.hmm.base"):
        m.fit(X, lengths)
    assert any(
        "'means_' attribute is set, it will be overwritten" in r.getMessage()
        for r in caplog.records
    )


def test_the_em_context_is_made_once_per_fit_not_per_restart(monkeypatch):
    """What EM re-uses (the Gaussian lane layout: copies of X) depends on the data only,
    so n_init restarts share one."""
    *_, X, lengths = _data(5)
    made = []
    em_context = GaussianHMM._em_context

    def spy(self, X, batch):
        made.append(len(X))
        return em_context(self, X, batch)

    monkeypatch.setattr(GaussianHMM, "_em_context", spy)
    GaussianHMM(3, n_iter=2, n_init=3, random_state=0).fit(X, lengths)
    assert made == [len(X)]


@pytest.mark.parametrize("ties", [None, {"means": [[0, 1], [2]]}])
def test_per_group_values_of_an_untied_kind_are_a_copy_and_a_tie_still_checks_them(ties):
    """Untied kinds skip the per-group comparison: the values come back equal, as a
    fresh array; a tied kind still refuses tied states whose values differ."""
    *_, X, lengths = _data()
    m = GaussianHMM(3, ties=ties, n_iter=1, random_state=0).fit(X, lengths)
    values = np.arange(6.0).reshape(3, 2)
    out = m._to_groups("covars", "covars_", values)
    assert np.array_equal(out, values) and out is not values and out.flags.c_contiguous
    out[0, 0] = 99.0
    assert values[0, 0] == 0.0
    if ties:
        with pytest.raises(ValueError, match=r"means_: states 0 and 1 are tied"):
            m._to_groups("means", "means_", values)
        assert np.array_equal(m._to_groups("means", "means_", [[1.0, 2], [1, 2], [3, 4]]),
                              [[1.0, 2], [3, 4]])  # fmt: skip


# ---------------------------------------------------------------- a fit's setup (stop 22)
def _eager_rng(monkeypatch):
    """From here on fits make their generator up front, as before stop 22 (the reference)."""
    import tying.hmm.base as base

    monkeypatch.setattr(base, "_fit_rng", np.random.default_rng)


def _assert_same_fit(a, b):
    assert a.history_ == b.history_
    for name in ("_startprob", "_transitions", "_means", "_covars"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("ctype", ["diag", "full", "tied", "spherical"])
@pytest.mark.parametrize("seed", [0, 7, np.int64(3), "generator"])
def test_a_random_start_draws_the_streams_of_an_eager_generator(ctype, seed, monkeypatch):
    """The generator is made on the first draw: k-means means and Dirichlet rows, over
    three restarts, are the draws an eager ``default_rng(seed)`` gives, to the bit; a
    Generator given as the seed is left in the same state."""
    *_, X, lengths = _data(1)

    def fit():
        rs = np.random.default_rng(11) if isinstance(seed, str) else seed
        m = GaussianHMM(3, ctype, n_iter=2, n_init=3, random_state=rs).fit(X, lengths)
        return m, (rs.bit_generator.state if isinstance(seed, str) else None)

    lazy, lazy_state = fit()
    _eager_rng(monkeypatch)
    eager, eager_state = fit()
    _assert_same_fit(lazy, eager)
    assert lazy_state == eager_state


def test_a_fit_with_every_start_given_makes_no_generator(monkeypatch):
    """Nothing random is drawn, so no generator is made (``default_rng(None)`` reads OS
    entropy); the fit is the eager one's, and a Generator seed is not advanced."""
    startprob, transmat, means, covars, X, lengths = _data(2)

    def fit(rs=None):
        return GaussianHMM(
            3, startprob_init=startprob, transmat_init=transmat, means_init=means,
            covars_init=covars, n_iter=3, random_state=rs,
        ).fit(X, lengths)  # fmt: skip

    eager = fit()

    def refuse(*args, **kwargs):
        raise AssertionError("a generator was made")

    monkeypatch.setattr(np.random, "default_rng", refuse)
    _assert_same_fit(fit(), eager)
    monkeypatch.undo()
    rs = np.random.default_rng(5)
    before = rs.bit_generator.state
    _assert_same_fit(fit(rs), eager)
    assert rs.bit_generator.state == before


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        (-1, ValueError, r"random_state must be a seed, got -1 \(negative\)"),
        ("abc", TypeError, "random_state must be a seed, got 'abc' .*SeedSequence expects int"),
        (1.5, TypeError, "random_state must be a seed, got 1.5 .*SeedSequence expects int"),
    ],
)
def test_a_bad_seed_is_refused_even_when_nothing_random_is_drawn(seed, error, match):
    """A seed ``default_rng`` refuses is refused by ``fit`` (named, with NumPy's reason;
    stop 35), before anything changes, although the fit itself would draw nothing."""
    startprob, transmat, means, covars, X, lengths = _data(2)
    m = GaussianHMM(3, startprob_init=startprob, transmat_init=transmat, means_init=means,
                    covars_init=covars, n_iter=2, random_state=seed)  # fmt: skip
    with pytest.raises(error, match=match):
        m.fit(X, lengths)
    assert not hasattr(m, "means_") and "ties_" not in vars(m)


def test_the_thread_limit_is_set_and_restored_only_when_it_changes_something(monkeypatch):
    """With every BLAS library already at the limit, no threadpoolctl limiter is made
    (nothing to set or restore); otherwise one is, and the old count comes back after."""
    import tying.hmm.base as base

    base._threads(1)  # builds the kept controller
    controller = base._CONTROLLER[0]
    if controller is None or not controller.lib_controllers:
        pytest.skip("threadpoolctl or a BLAS it controls is not here")
    made = []
    limit = controller.limit
    monkeypatch.setattr(controller, "limit", lambda **kw: made.append(kw) or limit(**kw))
    with limit(limits=1):
        with base._threads(1):
            assert [lib.get_num_threads() for lib in controller.lib_controllers] == [1] * len(
                controller.lib_controllers
            )
        assert made == []
        with base._threads(2):
            assert made == [{"limits": 2}]
            assert {lib.get_num_threads() for lib in controller.lib_controllers} == {2}
        assert [lib.get_num_threads() for lib in controller.lib_controllers] == [1] * len(
            controller.lib_controllers
        )


@pytest.mark.parametrize("ctype", ["spherical", "diag", "full", "tied"])
@pytest.mark.parametrize("ties", [None, {"means": "all"}, {"transitions": [[0, 1]]}])
@pytest.mark.parametrize("params", [None, "mc", "st"])
def test_the_degenerate_fit_warning_is_logged_exactly_below_the_free_count(
    ctype, ties, params, caplog
):
    """The cheap untied bound only skips fits that cannot warn: at the exact count of
    free scalars EM fits (ties and fixed parameters lowering it) the warning flips."""
    K, D = 3, 2
    m = GaussianHMM(K, ctype, ties=ties, params=params, n_iter=0, random_state=0)
    m.fit(np.random.default_rng(0).normal(size=(K + 1, D)))  # resolves the free count
    learn = m._learn()
    n_free = sum(n for p, n in m._free_per_param().items() if p in learn)
    fewest = -(-n_free // D)  # rows whose X.size reaches n_free
    assert fewest > 1
    for rows in (fewest - 1, fewest):
        logged = rows * D < n_free
        caplog.clear()
        X = np.random.default_rng(1).normal(size=(rows, D))
        with caplog.at_level("WARNING", logger="tying.hmm.base"):
            GaussianHMM(  # means_init: fewer rows than means is refused for k-means
                K,
                ctype,
                ties=ties,
                params=params,
                n_iter=0,
                random_state=0,
                means_init=np.zeros((K, D)),
            ).fit(X)
        got = any("degenerate solution" in r.getMessage() for r in caplog.records)
        assert got == logged, (rows * D, n_free)


def _count_calls(monkeypatch, module, name) -> list:
    calls = []
    f = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args[0] if args else None)
        return f(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("ctype", ["diag", "full", "tied"])
def test_restarts_check_the_given_start_values_once(ctype, monkeypatch):
    """With n_init=3 each given start value is checked once per fit, not once per restart;
    every restart still starts from its own copy: the fit's bits are those of checking
    at every restart (the reference), with random means drawn afresh per restart."""
    import tying.hmm.base as base
    import tying.hmm.gaussian as gaussian

    startprob, transmat, _, _, X, lengths = _data(3)
    covars = {"diag": np.ones((3, 2)), "full": np.repeat(np.eye(2)[None], 3, 0)}
    covars["tied"] = np.eye(2)

    def fit():
        return GaussianHMM(
            3, ctype, startprob_init=startprob, transmat_init=transmat,
            covars_init=covars[ctype], n_iter=3, n_init=3, random_state=4,
        ).fit(X, lengths)  # fmt: skip

    reference = GaussianHMM._checked_start
    monkeypatch.setattr(GaussianHMM, "_checked_start", lambda self, name, check: check())
    ref = fit()
    monkeypatch.setattr(GaussianHMM, "_checked_start", reference)
    stochastic = _count_calls(monkeypatch, base, "_stochastic")
    groups = _count_calls(monkeypatch, GaussianHMM, "_covars_groups")
    matrices = _count_calls(monkeypatch, gaussian, "_covariances_ok")
    m = fit()
    assert stochastic == ["startprob_init", "transmat_init"] and len(groups) == 1
    assert len(matrices) == (ctype != "diag")  # the eigenvalues of the stack: once
    _assert_same_fit(m, ref)
    assert "_start_memo" not in vars(m)


def test_a_bad_start_value_is_refused_with_restarts_too():
    """The first restart checks a given value; its error is the one-restart error, and the
    model is left as it was (no memo of checked values either)."""
    startprob, transmat, *_, X, lengths = _data(3)
    bad = transmat.copy()
    bad[1] = [0.5, 0.6, -0.1]
    m = GaussianHMM(3, startprob_init=startprob, transmat_init=bad, n_iter=2, n_init=3)
    with pytest.raises(ValueError, match=r"transmat_init must hold finite non-negative"):
        m.fit(X, lengths)
    assert "_start_memo" not in vars(m) and "ties_" not in vars(m)
