"""A fit's serial setup made cheaper (stop 23, issue 19) gives the same answers: the same
addresses and unit offsets, the same checked start values, and the same errors, word for
word, as the code it replaced (kept here as references)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tying.hmm.gaussian as gaussian_module
from tying.hmm import GaussianHMM, arenas, compiled, fused_em
from tying.hmm.validation import _stochastic

from .helpers import rows_per_unit

# fits here stop at a small n_iter on purpose (their numbers are what is tested); the
# budget's ConvergenceWarning is tested in test_review35.py and test_monitor.py
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")

needs_numba = pytest.mark.skipif(
    not compiled.available(),
    reason="compiled kernels unavailable: numba not installed (pip install numba) or TYING_DISABLE_NUMBA set",
)
PARAMS = ("_startprob", "_transitions", "_means", "_covars")


# ------------------------------------------------------------------ addresses
def _arrays():
    block = np.zeros(1000)
    ro = block[16:80].reshape(8, 8)
    ro = ro.view()
    ro.flags.writeable = False
    return {
        "whole": block,
        "view at an offset": block[24 : 24 + 60].reshape(3, 4, 5),
        "read-only view": ro,
        "strided": block[3:300:7],
        "transposed": block[:24].reshape(4, 6).T,
        "empty": block[5:5],
        "0-d": np.array(3.0),
        "int32": np.arange(10, dtype=np.int32)[1:],
        "bool": np.zeros(9, dtype=np.bool_)[2:],
        "object": np.array([None, 1, "a"], dtype=object)[1:],
    }


@pytest.mark.parametrize("name", list(_arrays()))
def test_address_is_the_data_pointer_numpy_reports(name):
    a = _arrays()[name]
    assert arenas.address(a) == a.ctypes.data


def test_address_leaves_the_array_usable_and_unlocked():
    """The ctypes view used to read the address is dropped at once: the array can still
    be resized in place (an exported buffer would refuse) and written."""
    a = np.zeros(16)
    arenas.address(a)
    a.resize(32, refcheck=False)
    a[:] = 1.0
    assert a.sum() == 32.0


def _old_unit_offsets(layout, block_a, block_b, base_a, base_b) -> np.ndarray:
    """Stop 22's ``_unit_offsets`` (addresses through ``ctypes.data``): the reference."""

    def offset(a, block):
        if fused_em._root(a) is not block or not a.flags.c_contiguous:
            raise ValueError("not carved from the block")
        return (a.ctypes.data - block.ctypes.data) // 8

    return np.array(
        [
            [offset(unit[n], block_a) - base_a for n in ("XL", "XcL", "ic", "m")]
            + [offset(unit[n], block_b) - base_b for n in ("b", "alpha")]
            for unit in layout.units
        ],
        dtype=np.int64,
    ).reshape(-1, 6)


def _layout(lengths, K=3, D=2):
    from tying.hmm import SequenceBatch
    from tying.hmm.forward_backward import LaneLayout

    X = np.random.default_rng(0).normal(size=(int(np.sum(lengths)), D))
    lay = LaneLayout(X, X.mean(0), SequenceBatch.from_lengths(lengths), fill=False)
    lay.prepare(K)
    return lay, fused_em._root(lay.units[0]["XL"]), fused_em._root(lay.units[0]["b"])


@needs_numba
@pytest.mark.parametrize("lengths", [[30] * 40, [40] * 60, [5, 9, 3, 12, 7, 1, 2]])
def test_unit_offsets_are_the_ones_ctypes_data_gives(lengths, monkeypatch):
    rows_per_unit(monkeypatch, 1_000)  # several units where there are rows
    lay, a, b = _layout(lengths)
    got = fused_em._unit_offsets(lay, a, b, 3, 5)
    assert np.array_equal(got[:, :6], _old_unit_offsets(lay, a, b, 3, 5))
    assert got.dtype == np.int64 and got.shape == (len(lay.units), 12)
    # stop 26: then the windows layout's columns, which a unit without windows points at
    # its own XL, XcL, m (for ic and m), b and alpha
    assert np.array_equal(got[:, 6:], got[:, [0, 1, 3, 3, 4, 5]])


@needs_numba
@pytest.mark.parametrize("swap", ["a copy", "a read-only view of the block", "a strided view"])
def test_unit_offsets_still_refuse_an_array_not_carved_contiguously_from_its_block(swap):
    lay, a, b = _layout([30] * 40)
    alpha = lay.units[-1]["alpha"]
    if swap == "a copy":
        lay.units[-1]["alpha"] = alpha.copy()
    elif swap == "a read-only view of the block":  # carved, read-only: the same offset
        ro = alpha.view()
        ro.flags.writeable = False
        lay.units[-1]["alpha"] = ro
        got = fused_em._unit_offsets(lay, a, b, 0, 0)
        assert np.array_equal(got[:, :6], _old_unit_offsets(lay, a, b, 0, 0))
        return
    else:
        lay.units[-1]["alpha"] = alpha[:, :, ::2]
    with pytest.raises(ValueError, match="not carved from the block"):
        fused_em._unit_offsets(lay, a, b, 0, 0)


def test_a_kept_table_of_another_shape_or_other_offsets_does_not_hold():
    from tying.hmm import _numba_em

    cols = fused_em._offset_columns(_numba_em)
    ut = np.zeros((2, _numba_em.U_COLS), dtype=np.int64)
    rel = np.arange(24, dtype=np.int64).reshape(2, 12)  # 6 + the windows' 6 (stop 26)
    ut[:, cols] = rel
    assert fused_em._table_holds(ut, rel)
    assert not fused_em._table_holds(ut[:1], rel)  # fewer units
    assert not fused_em._table_holds(ut, rel[:1])
    assert not fused_em._table_holds(ut, rel[:, :5])  # a malformed offset table
    other = rel.copy()
    other[1, 5] += 1  # the last unit's alpha elsewhere
    assert not fused_em._table_holds(ut, other)
    other = rel.copy()
    other[0, 10] += 1  # the first unit's windows' b elsewhere
    assert not fused_em._table_holds(ut, other)


# ------------------------------------------------------------------ start values
def _old_stochastic(name, value, shape):
    """Stop 22's ``_stochastic``: the reference."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        sums = arr.sum(-1)
    if (arr >= 0).all() and (np.abs(sums - 1.0) <= 1e-8).all():
        return arr
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must hold finite non-negative probabilities, got {arr}")
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-8):
        rows = np.flatnonzero(~np.isclose(np.atleast_1d(sums), 1.0, rtol=0, atol=1e-8))
        raise ValueError(
            f"{name} must sum to 1 along its last axis; row(s) {rows.tolist()} sum to "
            f"{np.atleast_1d(sums)[rows].tolist()}; normalise it"
        )
    return arr


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except ValueError as err:
        return ("error", str(err))


_SPECIAL = st.sampled_from([0.0, -0.0, 1.0, 0.5, -1e-300, 1e-9, np.nan, np.inf, -np.inf, 1e308])


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(0, 4),
    cols=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
    special=st.lists(_SPECIAL, max_size=3),
    near=st.sampled_from([0.0, 5e-9, 2e-8, -5e-9]),
    vector=st.booleans(),
)
def test_stochastic_accepts_and_refuses_as_before(rows, cols, seed, special, near, vector):
    rng = np.random.default_rng(seed)
    shape = (cols,) if vector else (rows, cols)
    arr = rng.dirichlet(np.ones(cols), size=shape[:-1]) if cols else np.zeros(shape)
    if arr.size:
        arr.flat[0] += near  # within or past the 1e-8 tolerance of the sums
        for i, v in enumerate(special):
            arr.flat[(7 * i) % arr.size] = v
    with np.errstate(all="raise"):  # neither version may warn on any of these
        new, old = (
            _outcome(_stochastic, "p", arr, shape),
            _outcome(_old_stochastic, "p", arr, shape),
        )
    assert new[0] == old[0]
    if new[0] == "ok":
        assert new[1] is arr or np.array_equal(new[1], old[1], equal_nan=True)
    else:
        assert new[1] == old[1]


def test_a_wrong_shape_is_still_named():
    with pytest.raises(ValueError, match=r"transmat_init must have shape \(2, 2\), got \(2, 3\)"):
        _stochastic("transmat_init", np.full((2, 3), 1 / 3), (2, 2))


# ------------------------------------------------------------------ diag covariances
def _model(K=3, D=2, ctype="diag", **kw):
    m = GaussianHMM(K, ctype, **kw)
    m._check_settings()
    m._ensure_ties()
    m.n_features_ = D
    return m


def _covars_outcome(model, value, per_state_only, monkeypatch, fast):
    with monkeypatch.context() as mp:
        if not fast:
            mp.setattr(gaussian_module, "_plain_variances", lambda *a: False)
        return _outcome(
            lambda: model._covars_groups("covars_init", value, per_state_only=per_state_only)
        )


@settings(max_examples=200, deadline=None)
@given(
    K=st.integers(1, 4),
    D=st.integers(1, 3),
    extra=st.sampled_from([(0, 0), (1, 0), (0, 1), (0, -1)]),
    special=st.lists(st.sampled_from([0.0, -0.0, -2.0, np.nan, np.inf, 1e-300, 7.0]), max_size=2),
    tied=st.booleans(),
    per_state_only=st.booleans(),
    have_means=st.booleans(),
)
def test_diag_start_variances_are_taken_or_refused_as_by_the_full_checks(
    K, D, extra, special, tied, per_state_only, have_means
):
    """The one-comparison path for hmmlearn's ``(K, D)`` variances gives the general
    checks' result, or their error word for word: shapes off by a row or a column,
    zeros, negatives, NaN and inf, tied states given unequal values."""
    ties = {"covars": [list(range(K))]} if tied and K > 1 else None
    model = _model(K, D, ties=ties)
    if have_means:
        model._means = np.zeros((K, D))
    rng = np.random.default_rng(K * 10 + D)
    cv = rng.uniform(0.5, 2.0, size=(K + extra[0], max(D + extra[1], 0)))
    if tied and K > 1 and rng.random() < 0.5:
        cv[:] = cv[0]  # equal within the group: accepted
    for i, v in enumerate(special):
        if cv.size:
            cv.flat[(5 * i) % cv.size] = v
    results = []
    with pytest.MonkeyPatch.context() as mp:
        for fast in (True, False):
            results.append(_covars_outcome(model, cv.copy(), per_state_only, mp, fast))
    (kind_a, a), (kind_b, b) = results
    assert kind_a == kind_b
    if kind_a == "ok":
        assert a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b


def test_the_fast_path_takes_a_plain_diag_start(monkeypatch):
    """The shortcut is used where it should be (a check that never passed would silently
    send every start through the full checks)."""
    seen = []
    real = gaussian_module._plain_variances
    monkeypatch.setattr(gaussian_module, "_plain_variances", lambda *a: seen.append(real(*a)))
    model = _model(3, 2)
    model._covars_groups("covars_init", np.ones((3, 2)), per_state_only=False)
    assert seen == [True]


# ------------------------------------------------------------------ whole fits
def _case(seed=0, K=3, D=2, lengths=(40,) * 30):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(sum(lengths), D)) + rng.integers(0, K, sum(lengths))[:, None]
    start = np.full(K, 1 / K)
    A = rng.dirichlet(np.ones(K) * 5, size=K)
    means = rng.normal(size=(K, D))
    return X, list(lengths), start, A, means


@pytest.mark.parametrize("ctype", ["diag", "spherical", "full", "tied"])
@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("given", [True, False])
def test_fits_give_the_bits_of_the_full_checks(ctype, n_jobs, given, monkeypatch):
    """Whole fits, from given and from random starts, with the shortcut and without it:
    the same parameters, history and monitor, and the same random stream."""
    X, lengths, start, A, means = _case()
    covars = {"diag": np.full((3, 2), 1.5), "spherical": np.full(3, 1.5),
              "full": np.stack([np.eye(2) * 1.5] * 3), "tied": np.eye(2) * 1.5}[ctype]  # fmt: skip
    kw = dict(startprob_init=start, transmat_init=A, means_init=means, covars_init=covars)

    def fit():
        return GaussianHMM(
            3, ctype, n_iter=6, tol=-np.inf, n_jobs=n_jobs, random_state=7, n_init=2,
            **(kw if given else {}),
        ).fit(X, lengths)  # fmt: skip

    a = fit()
    monkeypatch.setattr(gaussian_module, "_plain_variances", lambda *a: False)
    b = fit()
    assert a.history_ == b.history_ and a.monitor_.history == b.monitor_.history
    assert (a.n_iter_, a.converged_, a.best_restart_) == (b.n_iter_, b.converged_, b.best_restart_)
    for name in PARAMS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_a_bad_start_variance_is_refused_by_name_and_the_model_is_unchanged():
    X, lengths, start, A, means = _case()
    m = GaussianHMM(3, "diag", n_iter=2, random_state=0).fit(X, lengths)
    before = {k: np.array(getattr(m, k)) for k in PARAMS}
    m.covars_init = np.array([[1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match=r"covars_init\[1\]: variances must be positive"):
        m.fit(X, lengths)
    for k, v in before.items():
        assert np.array_equal(getattr(m, k), v)


# ------------------------------------------------------------------ the lane copy
@needs_numba
@pytest.mark.parametrize("ctype", ["diag", "full"])
def test_the_lane_copy_goes_to_a_helper_as_the_compiled_loop_starts_not_mid_setup(
    ctype, monkeypatch
):
    """The helper's copy is started after the start values and the plan (a pool thread
    started earlier only waited for the GIL, then took it from the fitting thread), and
    before the loop's first call; its fit has the bits of a one-thread fit."""
    from tying.hmm import _numba_em, _numba_em_full
    from tying.hmm.forward_backward import LaneLayout

    rows_per_unit(monkeypatch, 300)  # several units: a helper has work
    events, copies = [], []
    real_start = LaneLayout.start_fill

    def start_fill(self, n_jobs=None):
        real_start(self, n_jobs)
        events.append("start_fill")
        copies.append(self._copy is not None)

    monkeypatch.setattr(LaneLayout, "start_fill", start_fill)
    real_init = GaussianHMM._initialise
    monkeypatch.setattr(
        GaussianHMM, "_initialise", lambda self, *a: events.append("init") or real_init(self, *a)
    )
    kernels = _numba_em if ctype == "diag" else _numba_em_full
    real_run = kernels.em_run
    monkeypatch.setattr(kernels, "em_run", lambda *a: events.append("em_run") or real_run(*a))
    X, lengths, *_ = _case(lengths=(40,) * 60)
    two = GaussianHMM(3, ctype, n_iter=4, tol=-np.inf, n_jobs=2, random_state=1).fit(X, lengths)
    assert events[:3] == ["init", "start_fill", "em_run"], events
    assert copies == [True]  # the helper got the copy
    events.clear()
    one = GaussianHMM(3, ctype, n_iter=4, tol=-np.inf, n_jobs=1, random_state=1).fit(X, lengths)
    assert events[:2] == ["init", "em_run"] and copies == [True]  # one thread: no helper
    assert two.history_ == one.history_
    for name in PARAMS:
        assert np.array_equal(getattr(two, name), getattr(one, name)), name


@needs_numba
def test_the_general_loop_copies_its_lanes_itself_with_the_same_bits(monkeypatch):
    """Ties on the means keep the general loop: no compiled loop hands out the copy, so
    its first E-step copies every unit (on its own threads), with the bits of one thread."""
    rows_per_unit(monkeypatch, 300)
    X, lengths, *_ = _case(lengths=(40,) * 60)
    fits = [
        GaussianHMM(
            3, "diag", ties={"means": [[0, 1]]}, n_iter=4, tol=-np.inf, n_jobs=n, random_state=2
        ).fit(X, lengths)
        for n in (1, 2, 3)
    ]
    for fit in fits[1:]:
        assert fit.history_ == fits[0].history_
        for name in PARAMS:
            assert np.array_equal(getattr(fit, name), getattr(fits[0], name)), name


# ------------------------------------------------------------------ ties
@pytest.mark.parametrize(
    "spec",
    [None, {"means": [[0, 1]]}, {"covars": "all"}, {"transitions": "none"}, {"means": "all"}],
)
def test_resolved_ties_know_their_untied_kinds_as_a_comparison_would(spec):
    """The answers recorded at resolve are the ones the comparison gives (a StateTies
    built directly knows nothing and compares)."""
    from tying.hmm.ties import StateTies

    kinds = ("transitions", "means", "covars")
    resolved = StateTies.resolve(spec, n_states=3, kinds=kinds)
    seeded = {k for (q, k) in resolved.__dict__.get("_memos", {}) if q == "untied"}
    assert seeded == {k for k in kinds if spec is None or k not in spec}
    plain = StateTies(3, {k: resolved.group_of[k].copy() for k in kinds})
    for kind in kinds:
        assert resolved._untied(kind) == plain._untied(kind), kind


def test_an_untied_kind_edited_after_resolve_is_compared_again():
    from tying.hmm.ties import StateTies

    ties = StateTies.resolve(None, n_states=3, kinds=("means", "covars"))
    assert ties._untied("means")
    ties.group_of["means"][:] = [0, 0, 1]  # in place: the recorded key no longer matches
    assert not ties._untied("means")
    ties.group_of["covars"] = np.array([1, 0, 2])  # replaced: compared again too
    assert not ties._untied("covars")
    assert ties.pool("means", np.array([1.0, 2.0, 4.0])).tolist() == [3.0, 4.0]


def test_start_means_per_state_or_per_group_are_taken_and_other_shapes_named():
    """_per_group counts the groups only when the values are not one per state: both
    forms are still taken, and a third shape is still refused naming both."""
    X, lengths, *_ = _case()
    ties = {"means": [[0, 1]]}
    per_state = np.array([[0.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    per_group = np.array([[0.0, 0.0], [2.0, 2.0]])
    fits = [
        GaussianHMM(3, ties=ties, means_init=m, n_iter=2, random_state=0).fit(X, lengths)
        for m in (per_state, per_group)
    ]
    assert np.array_equal(fits[0].means_, fits[1].means_)
    bad = GaussianHMM(3, ties=ties, means_init=np.zeros((4, 2)), n_iter=2, random_state=0)
    with pytest.raises(
        ValueError,
        match=r"means_init must have shape \(3, 2\) = \(n_components, n_features\) \(one per "
        r"state\) or \(2, 2\) = \(groups in ties\['means'\], n_features\) \(one per group\), "
        r"got \(4, 2\)",
    ):
        bad.fit(X, lengths)
    assert "_means" not in vars(bad)  # refused before anything was set
