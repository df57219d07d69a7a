"""Cuts of a fit's fixed cost (issue 19, the ``n_jobs=2`` row, stop 61) that must change
no answer and drop no check:

- :func:`tying.hmm.priors.check_fitted_finite` checks every state array's common case
  together (:func:`~tying.hmm.priors._all_plainly_valid`), passing only where each
  array's own quick check passes (property test), and still names a bad entry;
- the compiled loop's plan reads each unit array's offset from where
  :func:`tying.hmm.arenas.carve` put it (``LaneLayout.carved``) while the unit still
  holds that very array; the offsets equal the ones read from the addresses, an array
  put in its place is read by its address (and refused when it is not on the block),
  and fits keep their bits;
- leaving the compiled loop with no helper thread makes no compiled wait call.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tying.hmm import GaussianHMM, compiled, fused_em, priors

from .test_fused_em import _assert_same_bits, _data, _fit

pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")

needs_numba = pytest.mark.skipif(
    not compiled.available(),
    reason="compiled kernels unavailable: numba not installed (pip install numba) or TYING_DISABLE_NUMBA set",
)

# ------------------------------------------------------------ check_fitted_finite
_entries = st.one_of(
    st.floats(0, 1),
    st.sampled_from([0.0, 1.0, 0.5, 1e-5, 1.001e-5, np.inf, -np.inf, np.nan, 1e308, -1e308]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_arrays = hnp.arrays(
    np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4), elements=_entries
)
_KINDS = ["_startprob", "_transitions", "_means", "_covars", "_weights", "_emissions"]


def _rows_near_one(value: np.ndarray, nudge: float) -> np.ndarray:
    if not (value.size and np.isfinite(value).all()):
        return value
    value = np.abs(value) + 1.0
    value = value / value.sum(-1, keepdims=True)
    value[..., 0] += nudge
    return value


@settings(derandomize=True, deadline=None, max_examples=120)
@given(
    kinds=st.lists(st.sampled_from(_KINDS), min_size=1, max_size=4, unique=True),
    values=st.lists(_arrays, min_size=4, max_size=4),
    nudges=st.lists(st.sampled_from([0.0, 1e-5, -1e-5, 1.0005e-5, 2e-5]), min_size=4, max_size=4),
)
def test_the_joint_quick_check_passes_only_what_every_quick_check_passes(kinds, values, nudges):
    arrays = {}
    with np.errstate(over="ignore", invalid="ignore"):
        for kind, value, nudge in zip(kinds, values, nudges, strict=False):
            if kind[1:] in priors._DISTRIBUTIONS and nudge != 2e-5:
                value = _rows_near_one(value, nudge)
            arrays[kind] = value
        joint = priors._all_plainly_valid(arrays)
        each = all(priors._plainly_valid(k[1:], v, None) for k, v in arrays.items())
    if joint:
        assert each, arrays


def test_the_joint_quick_check_passes_a_fitted_model_and_sends_the_rest_on():
    X = np.random.default_rng(0).normal(size=(60, 2))
    m = GaussianHMM(3, n_iter=3, random_state=0).fit(X)
    assert priors._all_plainly_valid(m._state_arrays())
    big = {"_means": np.array([[1e308], [-1e308]]), "_covars": np.array([[1e308], [1e308]])}
    with np.errstate(over="ignore"):  # (check_fitted_finite's own setting)
        assert not priors._all_plainly_valid(big)  # one sum overflows: the full check decides
        assert not priors._plainly_valid("covars", big["_covars"], None)
    assert not priors._all_plainly_valid({"_startprob": np.array([0.5, 0.5 + 2e-5])})
    assert not priors._all_plainly_valid({"_startprob": np.array([np.nan, 1.0])})
    assert not priors._all_plainly_valid({"_means": np.zeros((0, 2))})


@pytest.mark.parametrize(
    ("attr", "value", "match"),
    [
        ("_transitions", [[0.5, 0.5], [np.nan, 1.0]], r"transmat_ .*state 1"),
        ("_transitions", [[0.5, 0.5], [0.3, 0.69]], "transmat_ with a row summing to 0.99"),
        ("_startprob", [0.5, 0.4], "startprob_"),
        ("_means", [[1e308], [1e308]], None),  # finite: their total overflows, still valid
        ("_covars", [[1.0], [np.nan]], "covars_"),
    ],
)
def test_check_fitted_finite_names_what_it_refused_before(attr, value, match):
    X = np.random.default_rng(0).normal(size=(40, 1))
    m = GaussianHMM(2, n_iter=2, random_state=0).fit(X)
    setattr(m, attr, np.asarray(value, dtype=float))
    if match is None:
        priors.check_fitted_finite(m)
        return
    with pytest.raises(ValueError, match=match):
        priors.check_fitted_finite(m)


# -------------------------------------------------------------- unit offsets
def _layout(lengths, K, D, ctype):
    from tying.hmm.lane_layout import LaneLayout
    from tying.hmm.sequences import SequenceBatch

    X = _data(61, K, D, lengths)
    lay = LaneLayout(
        X, X.mean(0), SequenceBatch.from_lengths(lengths), n_jobs=2, K=K,
        covariance_type=ctype, fill=False,
    )  # fmt: skip
    lay.prepare(K)
    return lay, fused_em._root(lay.units[0]["XL"]), fused_em._root(lay.units[0]["b"])


_SHAPES = [
    ([40] * 150, 8, 4, "diag"),  # two lanes units
    ([5000], 8, 2, "diag"),  # a rows unit with windows
    ([3000, 2000], 4, 3, "full"),  # rows, full
    ([7] * 30 + [900], 3, 1, "tied"),
    ([30] * 600, 2, 2, "diag"),  # several lanes units
]


@needs_numba
@pytest.mark.parametrize(("lengths", "K", "D", "ctype"), _SHAPES)
def test_offsets_kept_from_the_carving_equal_the_addresses(lengths, K, D, ctype):
    lay, block_a, block_b = _layout(lengths, K, D, ctype)
    assert len(lay.carved) >= 4 * len(lay.units)
    kept = fused_em._unit_offsets(lay, block_a, block_b, 3, 5)
    lay.carved = {}  # every offset read from its array's address
    read = fused_em._unit_offsets(lay, block_a, block_b, 3, 5)
    assert np.array_equal(kept, read)


@needs_numba
def test_an_array_put_in_a_units_place_is_read_by_its_address():
    lay, block_a, block_b = _layout([40] * 150, 8, 4, "diag")
    unit = lay.units[1]
    kept = fused_em._unit_offsets(lay, block_a, block_b, 0, 0)
    # another view of the same block, elsewhere: its own offset, not the carved one
    unit["m"] = block_a[8 : 8 + unit["m"].size].reshape(unit["m"].shape)
    moved = fused_em._unit_offsets(lay, block_a, block_b, 0, 0)
    column = [name for name, _ in fused_em._ON_BLOCK].index("m")
    assert moved[1, column] == 8 != kept[1, column]
    unit["m"] = np.zeros_like(unit["m"])  # not on the block: refused, as before
    with pytest.raises(ValueError, match="not carved from the block"):
        fused_em._unit_offsets(lay, block_a, block_b, 0, 0)


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize(("lengths", "K", "D", "ctype"), _SHAPES[:4])
def test_fits_keep_their_bits_with_the_kept_offsets(lengths, K, D, ctype, n_jobs, monkeypatch):
    from tying.hmm.lane_layout import LaneLayout

    X = _data(62, K, D, lengths)
    new = _fit(X, lengths, K, ctype=ctype, n_jobs=n_jobs)
    monkeypatch.setattr(fused_em, "_TABLES", type(fused_em._TABLES)())
    monkeypatch.setattr(LaneLayout, "_record", lambda self, carved, at: None)  # addresses
    ref = _fit(X, lengths, K, ctype=ctype, n_jobs=n_jobs)
    _assert_same_bits(new, ref)


# ------------------------------------------------------------------ __exit__
@needs_numba
@pytest.mark.parametrize(("n_jobs", "waits"), [(1, 0), (2, 1)])
def test_the_compiled_wait_runs_only_for_helpers(n_jobs, waits, monkeypatch):
    """One thread: no wait call (it was made with nothing to wait for). Two: at most one,
    for the helper that ran (one cancelled before it started is not waited for)."""
    from tying.hmm import _numba_em

    calls = []
    real = _numba_em.wait_left
    monkeypatch.setattr(_numba_em, "wait_left", lambda *a: calls.append(a[1]) or real(*a))
    lengths = [40] * 150  # two units: a helper for n_jobs=2
    _fit(_data(63, 8, 4, lengths), lengths, 8, n_jobs=n_jobs)
    assert len(calls) <= waits if n_jobs > 1 else len(calls) == 0
    assert all(n > 0 for n in calls)
