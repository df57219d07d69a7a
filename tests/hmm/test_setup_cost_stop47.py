"""Two cuts of a small fit's setup (issue 19, 2026-12-05) that must change no answer:

- a fit of a few long sequences keeps its compiled loop's unit table from one fit to
  the next (a rows unit's ``inv_c`` column was read against the wrong arena, so the kept
  table matched only when the two arenas happened to share their alignment, and it was
  rebuilt on every fit), with the same bits as a fit that builds it afresh;
- :func:`tying.hmm.priors.check_fitted_finite` passes the common case in two reductions
  and never passes an array its full per-entry check refuses (property test against the
  rule written out: every entry finite, and a distribution's rows ``np.isclose`` to 1).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tying.hmm import GaussianHMM, compiled, fused_em, priors

from .test_fused_em import _assert_same_bits, _data, _fit, _general_loop

_numba_em = pytest.importorskip("tying.hmm._numba_em") if compiled.available() else None
pytestmark = pytest.mark.filterwarnings("ignore::tying.hmm.ConvergenceWarning")

needs_numba = pytest.mark.skipif(
    not compiled.available(),
    reason="compiled kernels unavailable: numba not installed (pip install numba) or TYING_DISABLE_NUMBA set",
)


def _count_builds(monkeypatch) -> list:
    monkeypatch.setattr(fused_em, "_TABLES", type(fused_em._TABLES)())
    built = []
    real = fused_em._unit_tables
    monkeypatch.setattr(fused_em, "_unit_tables", lambda *a: built.append(1) or real(*a))
    return built


@needs_numba
@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize(
    ("lengths", "K", "D"),
    [([1000], 3, 1), ([2000, 2000], 8, 4), ([777, 1500, 333], 5, 2), ([3000], 8, 1)],
)
def test_a_refit_of_a_few_long_sequences_reads_the_kept_unit_table(
    lengths, K, D, n_jobs, monkeypatch
):
    built = _count_builds(monkeypatch)
    X = _data(47, K, D, lengths)
    fits = [_fit(X, lengths, K, n_jobs=n_jobs) for _ in range(4)]
    ((ut, *_),) = fused_em._TABLES.values()
    assert (ut[:, _numba_em.U_ROWS] > 0).all()  # rows units: the case the fix is about
    assert len(built) == 1, f"the unit table was built {len(built)} times in 4 fits"
    for fit in fits[1:]:
        _assert_same_bits(fit, fits[0])
    _general_loop(monkeypatch)  # the reference: no compiled loop, no kept table
    ref = _fit(X, lengths, K)
    np.testing.assert_allclose(fits[0].history_, ref.history_, rtol=1e-12)
    for name in ("_startprob", "_transitions", "_means", "_covars"):
        np.testing.assert_allclose(
            getattr(fits[0], name), getattr(ref, name), rtol=1e-10, atol=1e-14
        )


@needs_numba
def test_a_kept_rows_table_that_no_longer_holds_is_rebuilt(monkeypatch):
    """The keeping must not loosen the check: a kept table of a rows unit whose ``inv_c``
    offset is moved is rebuilt (and the fit keeps its bits), never read."""
    built = _count_builds(monkeypatch)
    lengths = [1200, 900]
    X = _data(48, 4, 2, lengths)
    first = _fit(X, lengths, 4)
    ((key, (ut, *rest)),) = fused_em._TABLES.items()
    bad = ut.copy()
    ic_column = fused_em._offset_columns(_numba_em)[fused_em._IC_COLUMN]
    bad[:, ic_column] += 8
    bad.flags.writeable = False
    fused_em._TABLES[key] = (bad, *rest)
    again = _fit(X, lengths, 4)
    assert len(built) == 2
    _assert_same_bits(again, first)
    assert np.array_equal(fused_em._TABLES[key][0], ut)


# --------------------------------------------------------------- check_fitted_finite
def _full_rule(kind: str, value: np.ndarray) -> bool:
    """The full check's verdict, written out: every entry finite, and a distribution's
    rows summing to 1 by ``np.isclose``'s default tolerance."""
    if not np.isfinite(value).all():
        return False
    if kind in priors._DISTRIBUTIONS:
        with np.errstate(over="ignore", invalid="ignore"):
            return bool(np.isclose(value.sum(-1), 1.0).all())
    return True


_entries = st.one_of(
    st.floats(0, 1),
    st.sampled_from(
        [0.0, 1.0, 0.5, 1e-5, 1.001e-5, 9.99e-6, np.inf, -np.inf, np.nan, 1e308, -1e308]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(derandomize=True, deadline=None, max_examples=300)
@given(
    kind=st.sampled_from(["startprob", "transitions", "emissions", "weights", "means", "covars"]),
    value=hnp.arrays(
        np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), elements=_entries
    ),
    nudge=st.sampled_from([0.0, 1e-5, -1e-5, 1.0005e-5, -1.0005e-5, 1.0011e-5, 2e-5]),
)
def test_the_quick_check_never_passes_what_the_full_check_refuses(kind, value, nudge):
    with np.errstate(over="ignore", invalid="ignore"):
        if value.size and kind in priors._DISTRIBUTIONS and np.isfinite(value).all():
            value = np.abs(value) + 1.0  # rows that sum to 1 (plus nudge) as often as not
            value = value / value.sum(-1, keepdims=True)
            value[..., 0] += nudge
        quick = priors._plainly_valid(kind, value, None)
    if quick:
        assert _full_rule(kind, value), (kind, value)


@pytest.mark.parametrize(
    ("attr", "value", "match"),
    [
        ("_transitions", [[0.5, 0.5], [np.nan, 1.0]], "transmat_"),
        ("_transitions", [[0.5, 0.5], [0.3, 0.69]], "transmat_ with a row summing to 0.99"),
        ("_transitions", [[1e308, 1e308], [0.5, 0.5]], "transmat_"),
        ("_startprob", [0.5, 0.4], "startprob_"),
        ("_means", [[np.inf], [0.0]], "means_"),
        ("_covars", [[1.0], [-np.inf]], "covars_"),
    ],
)
def test_a_bad_fitted_value_is_still_named(attr, value, match):
    X = np.random.default_rng(0).normal(size=(40, 1))
    m = GaussianHMM(2, n_iter=2, random_state=0).fit(X)
    setattr(m, attr, np.asarray(value, dtype=float))
    with pytest.raises(ValueError, match=match):
        priors.check_fitted_finite(m)


def test_a_fitted_model_within_the_tolerance_passes():
    X = np.random.default_rng(1).normal(size=(60, 2))
    m = GaussianHMM(3, n_iter=3, random_state=0).fit(X)
    m._transitions = m._transitions.copy()
    m._transitions[0, 0] += 1.0005e-5  # past the quick check's 1e-5, inside isclose's 1.001e-5
    priors.check_fitted_finite(m)  # the full check decides: it passes
