"""Every way ``GlobalFit`` can solve a fit, on all 54 NIST StRD cases (stop 42).

The fit has four solver paths: MINPACK ``lmder`` (``"lm"``, small and unbounded), our
Schur-complement Levenberg-Marquardt (``"lm"``, bounded or large), and scipy's trf
(``"trf"``) with the exact trust-region solver on a dense Jacobian (small problems) or
lsmr on the sparse one (large global fits). Each must reach the certified values (LRE >= 4
on every parameter) or say so (``success=False`` and a ConvergenceWarning); where lmfit
reaches them from the same start and we do not, that is a defect too.

Before this stop trf used lsmr on every problem with two or more parameters, and its ftol
test fired early in flat valleys: success=True with wrong digits on 8 of 54 cases
(Lanczos2 LRE 3.0 at 1e-3 above the certified chi2 where lmfit's least_squares reaches
6.6, MGH17 s1 LRE 0, Hahn1 s2 1.6, Nelson s2 3.4, Thurber s2 3.6). A guard fails when a
solver function is added to :mod:`tying.fit.solvers` and not swept here.
"""

from __future__ import annotations

import inspect
import pathlib
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tying.fit.nist as nist
import tying.fit.solvers as solvers
from tying.fit import GlobalFit
from tying.fit.solvers import ConvergenceWarning, FitWarning

DATA = pathlib.Path(__file__).parent / "data" / "nist-strd"
PASS_LRE = 4.0


def _minpack(patch, problem):
    return {}


def _schur_lm(patch, problem):
    # finite bounds far from every NIST value send "lm" to the Schur-complement LM
    return {"bounds": {n: (-1e12, 1e12) for n in problem.param_names}}


def _trf_exact(patch, problem):
    return {"solver": "trf"}


def _trf_lsmr(patch, problem):
    # a large global fit's path, forced on a small problem
    patch.setattr(solvers, "TRF_DENSE_MAX_ENTRIES", 0)
    return {"solver": "trf"}


#: every solver path: (the kwargs it takes, the solver function it must reach)
PATHS = {
    "lm: MINPACK lmder": (_minpack, "minpack"),
    "lm: Schur LM": (_schur_lm, "levenberg_marquardt"),
    "trf: exact, dense": (_trf_exact, "trust_region"),
    "trf: lsmr, sparse, then LM": (_trf_lsmr, "trust_region"),
}
#: cases a path may report success=True below LRE 4, and why: never silently
ALLOWED = {
    # lsmr ends where b4 = b5, so the two exponentials are one: a true stationary point
    # (chi2 1.46 x certified) no local test tells from the minimum; the singular-Jacobian
    # FitWarning says the values of b2 and b3 are "arbitrary, not fitted"
    ("trf: lsmr, sparse, then LM", "MGH17", 1): "arbitrary, not fitted",
}


def _solver_functions() -> set[str]:
    """The functions of tying.fit.solvers that run a solver (they return a SolverOutput)."""
    return {
        name
        for name, f in inspect.getmembers(solvers, inspect.isfunction)
        if f.__module__ == solvers.__name__
        and not name.startswith("_")
        and inspect.signature(f).return_annotation in ("SolverOutput", solvers.SolverOutput)
        and name != "run_solver"  # the dispatcher
    }


def test_every_solver_function_and_name_is_swept():
    assert _solver_functions() == {fn for _, fn in PATHS.values()}, (
        "a solver function of tying.fit.solvers is not in PATHS: add its path to the sweep"
    )
    assert set(solvers.SOLVERS) == {name.split(":")[0] for name in PATHS}
    # trf's two trust-region solvers are both swept
    assert {k for k in PATHS if k.startswith("trf")} == {
        "trf: exact, dense",
        "trf: lsmr, sparse, then LM",
    }


@pytest.fixture(scope="module")
def problems():
    return nist.problems(DATA)


@pytest.fixture(scope="module")
def swept(problems):
    """``swept(path, backend)``: the sweep's rows, run once per module (stop 51: the trf
    sweep and the comparison with lmfit's least_squares each fitted the 54 cases)."""
    cache = {}

    def get(path, backend="numpy"):
        if (path, backend) not in cache:
            with pytest.MonkeyPatch.context() as patch:
                cache[path, backend] = _sweep(problems, path, patch, backend)
        return cache[path, backend]

    return get


def _sweep(problems, path, monkeypatch, backend="numpy"):
    setup, function = PATHS[path]
    calls = []
    real = getattr(solvers, function)

    def spy(*args, **kwargs):
        calls.append(function)
        return real(*args, **kwargs)

    rows = {}
    with monkeypatch.context() as patch:
        patch.setattr(solvers, function, spy)
        for p in problems:
            for start in (1, 2):
                kwargs = setup(patch, p)
                with warnings.catch_warnings(record=True) as record:
                    warnings.simplefilter("always")
                    res, value_lre, _ = nist.fit(p, start, backend, **kwargs)
                rows[p.name, start] = (res, float(value_lre.min()), record)
    assert calls and set(calls) == {function}, f"{path} did not run {function}"
    return rows


def _check(path, rows):
    wrong = {}
    for (name, start), (res, lre, record) in rows.items():
        categories = {w.category for w in record}
        if lre >= PASS_LRE and res.success:
            continue
        if not res.success:
            # a failure is said aloud, never only in the result
            assert ConvergenceWarning in categories, (name, start, res.message)
            continue
        why = ALLOWED.get((path, name, start))
        if why is not None and why in res.message and FitWarning in categories:
            continue
        wrong[name, start] = (round(lre, 1), res.message[:160])
    assert not wrong, f"{path}: success=True with wrong digits: {wrong}"
    return sum(lre >= PASS_LRE for _, lre, _ in rows.values())


@pytest.mark.parametrize(
    ("path", "backend", "least"),
    [
        ("lm: MINPACK lmder", "numpy", 52),
        ("lm: Schur LM", "numpy", 52),
        ("trf: exact, dense", "numpy", 54),
        ("trf: exact, dense", "torch", 54),
        pytest.param("trf: lsmr, sparse, then LM", "numpy", 47, marks=pytest.mark.slow),
    ],
)
def test_every_solver_path_reaches_nist_or_says_so(swept, path, backend, least):
    rows = swept(path, backend)
    passed = _check(path, rows)
    assert passed >= least, f"{path} ({backend}): {passed}/54 cases reach LRE 4"


def _lmfit_least_squares(problem, start):
    lmfit = pytest.importorskip("lmfit")
    model = problem.model("numpy")
    params = lmfit.Parameters()
    for name, value in problem.init(start).items():
        params.add(name, value=value)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            out = lmfit.minimize(
                lambda pr: model(problem.x, **pr.valuesdict()) - problem.y,
                params,
                method="least_squares",
            )
        except ValueError:  # lmfit refuses a step where the model is NaN
            return 0.0
    values = [out.params[n].value for n in problem.param_names]
    return float(nist.lre(values, problem.certified).min())


def test_trf_reaches_every_nist_case_lmfit_least_squares_reaches(problems, swept):
    # the anchor of "trf": lmfit's least_squares (scipy's trf with the exact solver);
    # before stop 42 it reached Lanczos2 (LRE 6.6, 6.3) where ours stopped at 3.0.
    # Ours are the trf sweep's fits (solver="trf", NumPy model, defaults)
    ours = swept("trf: exact, dense", "numpy")
    missed = {}
    for p in problems:
        for start in (1, 2):
            theirs = _lmfit_least_squares(p, start)
            lre = ours[p.name, start][1]
            if theirs >= PASS_LRE and not lre >= PASS_LRE:
                missed[p.name, start] = (round(theirs, 1), round(lre, 1))
    assert not missed, f"lmfit least_squares reaches these, trf does not: {missed}"


def test_lanczos2_on_trf_reaches_the_certified_values():
    # the defect as reported: success=True, LRE 3.0, chi2 1e-3 above the certified RSS
    problem = nist.load(DATA / "Lanczos2.dat")
    for start in (1, 2):
        res, value_lre, se_lre = nist.fit(problem, start, solver="trf")
        assert res.success and value_lre.min() >= 6, (start, value_lre.min())
        assert res.chi2 == pytest.approx(problem.certified_rss, rel=1e-8)
        assert se_lre.min() >= 4


@pytest.mark.parametrize("name", ["MGH10", "Lanczos1"])
def test_a_stalled_lsmr_result_is_still_flagged(monkeypatch, name):
    # the checks of a stall (stop 25: MGH10 s1; stop 35: Lanczos1) keep their witness:
    # trf on lsmr without the LM that now finishes its stalls
    monkeypatch.setattr(solvers, "TRF_DENSE_MAX_ENTRIES", 0)
    monkeypatch.setattr(solvers, "_polish", lambda ev, data, pmap, tol, out: out)
    problem = nist.load(DATA / f"{name}.dat")
    with pytest.warns(UserWarning) as record:
        res, value_lre, _ = nist.fit(problem, 1, solver="trf")
    assert not res.success and value_lre.min() < 4
    assert "this is not a minimum" in res.message
    assert any(issubclass(w.category, ConvergenceWarning) for w in record)


def test_trf_holds_a_local_parameter_whose_column_is_zero():
    # on the exact solver (had it taken this global fit) the SVD mixed rounding into a
    # zero column's direction: a local b that one form of model_fn does not read moved
    # from 0.7 to -311 (and from 0 to -6120), no longer named as held at its start
    rng = np.random.default_rng(2)
    x1, x2 = np.linspace(0, 5, 40), np.linspace(0, 3, 25)
    y1 = 2.0 * np.exp(-0.8 * x1) + rng.normal(0, 0.03, 40)
    y2 = 1.5 / (1 + (0.8 * x2) ** 2) + 0.2 + rng.normal(0, 0.02, 25)

    def two_forms(x, k, a, b, kind):
        return np.where(kind == 0, a * np.exp(-k * x), a / (1 + (k * x) ** 2) + b)

    fits = {}
    for solver in ("lm", "trf"):
        with pytest.warns(
            FitWarning, match=r"'b\[dataset 0\]' do\(es\) not change the model in its"
        ):
            fits[solver] = GlobalFit(
                two_forms, [(x1, y1, 0.03), (x2, y2, 0.02)], shared=["k"], local=["a", "b"],
                fixed={"kind": [0, 1]}, init={"k": 1.0, "a": 1.0, "b": 0.7}, solver=solver,
            ).run()  # fmt: skip
    trf = fits["trf"]
    assert trf.success and trf.values["b"][0] == 0.7 and np.isnan(trf.stderr["b"][0])
    np.testing.assert_allclose(trf.x, fits["lm"].x, rtol=1e-6)


def test_trf_exact_holds_a_parameter_the_model_does_not_read():
    # one data set of two forms, b0 read as 0*b0: the exact solver's SVD mixed rounding
    # into its zero column's direction and moved it from 0.7 to 177.8
    rng = np.random.default_rng(2)
    x1, x2 = np.linspace(0, 5, 40), np.linspace(0, 3, 25)
    y1 = 2.0 * np.exp(-0.8 * x1) + rng.normal(0, 0.03, 40)
    y2 = 1.5 / (1 + (0.8 * x2) ** 2) + 0.2 + rng.normal(0, 0.02, 25)
    kind = np.r_[np.zeros(40), np.ones(25)]

    def model(x, k, a0, a1, b0, b1):
        return np.where(kind == 0, a0 * np.exp(-k * x), a1 / (1 + (k * x) ** 2) + b1) + 0 * b0

    data = [(np.r_[x1, x2], np.r_[y1, y2], np.r_[np.full(40, 0.03), np.full(25, 0.02)])]
    names = ["k", "a0", "a1", "b0", "b1"]
    init = {"k": 1.0, "a0": 1.0, "a1": 1.0, "b0": 0.7, "b1": 0.0}
    fits = {}
    for solver in ("lm", "trf"):
        with pytest.warns(FitWarning, match=r"'b0' do\(es\) not change the model at the"):
            fits[solver] = GlobalFit(model, data, shared=names, init=init, solver=solver).run()
    assert fits["trf"].values["b0"] == 0.7
    np.testing.assert_allclose(fits["trf"].x, fits["lm"].x, rtol=1e-6)


def test_a_column_zero_at_the_start_only_is_fitted_by_trf():
    # b in a*b*x from a = 0: its column is zero at the start only; held there, the fit
    # would end with b at its start. It is refitted with every parameter
    x = np.linspace(0, 2, 30)
    y = 1.5 * np.exp(-0.7 * x) + 0.1 * x
    res = GlobalFit(
        lambda x, a, k, c: a * np.exp(-k * x) + c * a * x,
        [(x, y)],
        shared=["a", "k", "c"],
        init={"a": 0.0, "k": 1.0, "c": 1.0},
        solver="trf",
    ).run()
    assert res.success
    np.testing.assert_allclose([res.values[n] for n in "akc"], [1.5, 0.7, 0.1 / 1.5], rtol=1e-8)


def test_a_gauss_newton_gain_whose_column_overflows_only_summed_over_data_sets():
    # stop 35's a*log(b*x), b shared: trf now ends at b = 3.7e-156, where the b column's
    # squared norm is 4e307 and 1.6e308 in the two data sets, finite each, inf summed.
    # The unit scaling read inf, zeroed the column, and the Gauss-Newton step that removes
    # all of chi2 read a gain of 1e-12: success=True, "a minimum all the same"
    rng = np.random.default_rng(4)
    x = np.linspace(0.1, 5, 40)
    data = [(x, a * np.log(2.0 * x) + rng.normal(0, 0.02, 40)) for a in (1.0, 2.0)]
    fit = GlobalFit(lambda x, a, b: a * np.log(b * x), data, shared=["b"], local=["a"],
                    init={"a": 1.0, "b": 0.05}, solver="trf")  # fmt: skip
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        res = fit.run()
    assert not res.success
    assert re.search(r"but a Gauss-Newton step along 'b' and 'a\[dataset 1\]' would lower chi2 by "
                     r"100% .* this is not a minimum", res.message)  # fmt: skip
    assert "a minimum all the same" not in res.message
    assert any(w.category is ConvergenceWarning for w in record)
    # the same diagnosis, read directly at a point whose per-data-set blocks are finite
    from tying.fit import jacobian as jac_mod
    from tying.fit.diagnostics import _gauss_newton_gain

    data_, pmap, ev = fit._prepare()
    theta = np.array([3.74e-156, -0.0037776, -0.0075677])  # b, a[0], a[1]
    jw = jac_mod.weighted(ev.jacobian(theta), data_)
    with np.errstate(over="ignore"):
        blocks = np.einsum("knp,knp->kp", jw, jw)[:, 0]
        assert np.isfinite(blocks).all() and not np.isfinite(blocks.sum())
    r = jac_mod.residuals(ev.predict(theta), data_)
    assert "would lower chi2 by 100%" in _gauss_newton_gain(pmap, jw, r, np.zeros(3, bool))


# ------------------------------------------------------------------ property -------


def _rounded_exponentials(b, digits, n=24):
    x = np.linspace(0, 1.15, n)
    y = b[0] * np.exp(-b[1] * x) + b[2] * np.exp(-b[3] * x) + b[4] * np.exp(-b[5] * x)
    return x, np.round(y, digits)


@settings(derandomize=True, deadline=None, max_examples=8)
@given(
    rates=st.lists(st.floats(0.5, 6.0), min_size=3, max_size=3, unique=True).filter(
        lambda r: min(abs(a - b) for i, a in enumerate(r) for b in r[i + 1 :]) > 0.8
    ),
    amps=st.lists(st.floats(0.05, 3.0), min_size=3, max_size=3),
    digits=st.integers(5, 8),
    path=st.sampled_from(sorted(PATHS)),
)
def test_property_a_converged_flat_valley_fit_is_at_the_minimum(rates, amps, digits, path):
    """Lanczos-like sums of three exponentials with data rounded to 5-8 digits: long, flat
    valleys where a stopping test can fire early. On every solver path a fit reported
    converged must sit at the least-squares minimum: chi2 no more than 1e-6 relative above
    scipy's least_squares (exact trust region, tolerances at 1e-15) from the truth."""
    from scipy.optimize import least_squares

    rates = sorted(rates)
    b = np.array([amps[0], rates[0], amps[1], rates[1], amps[2], rates[2]])
    x, y = _rounded_exponentials(b, digits)
    names = [f"b{i + 1}" for i in range(6)]

    def model(x, b1, b2, b3, b4, b5, b6):
        return b1 * np.exp(-b2 * x) + b3 * np.exp(-b4 * x) + b5 * np.exp(-b6 * x)

    ref = least_squares(
        lambda p: model(x, *p) - y, b, method="trf", ftol=1e-15, xtol=1e-15, gtol=1e-15
    )
    ref_chi2 = 2 * ref.cost
    start = dict(zip(names, b * np.array([1.05, 0.95, 0.95, 1.05, 1.02, 0.98])))
    with pytest.MonkeyPatch.context() as patch:
        kwargs = PATHS[path][0](patch, type("P", (), {"param_names": names})())
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            res = GlobalFit(model, [(x, y)], shared=names, init=start, **kwargs).run()
    if not res.success:
        return  # said aloud (a ConvergenceWarning): not silent
    if "arbitrary, not fitted" in res.message:
        # two terms merged (a stationary point no local test tells from the minimum),
        # said aloud by the singular-Jacobian FitWarning, as ALLOWED above
        assert any(w.category is FitWarning for w in record)
        return
    floor = 1e-30 * len(x)  # rounding noise at an exact fit
    assert res.chi2 <= ref_chi2 * (1 + 1e-6) + floor, (path, res.chi2, ref_chi2, res.message)
