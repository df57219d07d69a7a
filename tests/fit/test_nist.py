"""NIST StRD nonlinear regression: all 27 problems x 2 starts, with default settings (issue 17).

Both model kinds (NumPy: complex step verified against central differences, and central
differences alone; torch: complex step verified against autograd) must reach LRE >= 4 on
every parameter in at least 52 of the 54 cases; a fit reported converged must be
right (a fit stopped by its budget or on a plateau says so), and the standard
errors must match the certified ones to LRE >= 4 wherever double precision can
carry them. lmfit's default ``leastsq`` runs on the same cases when it is installed:
every case it reaches, each model kind reaches too, and the table is printed
(``pytest -s``).
"""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import pytest

import tying.fit.nist as nist

DATA = pathlib.Path(__file__).parent / "data" / "nist-strd"
PASS_LRE = 4.0
#: Lanczos1's data are exact to 13 digits: its residuals (1e-13) are rounding noise, so
#: its certified standard errors (which scale with them) are not reproducible in float64
STDERR_AT_ROUNDING_LEVEL = {"Lanczos1"}


@pytest.fixture(scope="module")
def problems():
    return nist.problems(DATA)


def _ours(problems, backend, monkeypatch=None):
    rows = {}
    if monkeypatch is not None:  # central differences alone: the complex step switched off
        from tying.fit.model import ModelEvaluator

        monkeypatch.setattr(ModelEvaluator, "_jac_complex_step", lambda self, *a: None)
    for p in problems:
        for start in (1, 2):
            with warnings.catch_warnings():
                # ConvergenceWarning for the cases that fail: counted below, not an error
                warnings.simplefilter("ignore")
                res, value_lre, se_lre = nist.fit(p, start, backend)
            rows[p.name, start] = (
                res.success,
                float(value_lre.min()),
                float(se_lre.min()),
                res.message,
            )
    return rows


def _lmfit(problems):
    pytest.importorskip("lmfit")
    rows = {}
    for p in problems:
        for start in (1, 2):
            out, value_lre, stderr_lre = nist.fit_lmfit(p, start)
            if out is None:
                rows[p.name, start] = (False, 0.0, 0.0, "lmfit refused a NaN model value")
                continue
            rows[p.name, start] = (
                bool(out.success),
                float(value_lre.min()),
                float(stderr_lre.min()),
                out.message,
            )
    return rows


def _print_table(results):
    kinds = list(results)
    print(f"\n{'problem':10s} start  " + "  ".join(f"{k:>18s}" for k in kinds))
    for key in results[kinds[0]]:
        cells = []
        for k in kinds:
            ok, lre, se, _ = results[k][key]
            cells.append(f"{lre:5.1f} (se {se:4.1f}) {'ok' if ok else '--'}")
        print(f"{key[0]:10s} {key[1]:5d}  " + "  ".join(f"{c:>18s}" for c in cells))
    for k in kinds:
        rows = results[k].values()
        passed = sum(lre >= PASS_LRE for _, lre, _, _ in rows)
        wrong = sum(ok and lre < PASS_LRE for ok, lre, _, _ in rows)
        print(f"{k}: {passed}/54 cases with LRE >= 4; {wrong} reported converged while wrong")


@pytest.fixture(scope="module")
def suite(problems):
    """``suite(kind)``: the 54 fits of one kind, run once per module. Stop 52: one test ran
    all four kinds (25 s, the slowest of the package in CI); each kind is now its own
    test, so no test waits for the others' fits and two workers can share them."""
    cache = {}

    def get(kind):
        if kind not in cache:
            if kind == "lmfit leastsq":
                cache[kind] = _lmfit(problems)
            elif kind == "tying numpy, FD only":
                with pytest.MonkeyPatch.context() as patch:
                    cache[kind] = _ours(problems, "numpy", patch)
            else:
                cache[kind] = _ours(problems, kind.removeprefix("tying "))
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", ["tying numpy", "tying torch", "tying numpy, FD only"])
def test_nist_strd_suite_with_default_settings(suite, kind):
    rows = suite(kind)
    passed = [key for key, (_, lre, _, _) in rows.items() if lre >= PASS_LRE]
    assert len(passed) >= 52, f"{kind}: only {len(passed)}/54 cases reach LRE 4"
    # no silent wrong results: a fit reported converged is right
    wrong = {key: msg for key, (ok, lre, _, msg) in rows.items() if ok and lre < PASS_LRE}
    assert not wrong, f"{kind}: reported converged but wrong: {wrong}"
    bad_se = {
        key: se
        for key, (_, lre, se, _) in rows.items()
        if lre >= PASS_LRE and se < PASS_LRE and key[0] not in STDERR_AT_ROUNDING_LEVEL
    }
    assert not bad_se, f"{kind}: certified standard errors missed: {bad_se}"


@pytest.mark.parametrize("kind", ["tying numpy", "tying torch"])
def test_nist_strd_suite_reaches_every_case_lmfit_leastsq_reaches(suite, kind):
    theirs = suite("lmfit leastsq")  # skipped without lmfit
    ours = suite(kind)
    _print_table({kind: ours, "lmfit leastsq": theirs})
    # case by case (before stop 52: the counts alone)
    missed = {
        key: (round(lre, 1), round(ours[key][1], 1))
        for key, (_, lre, _, _) in theirs.items()
        if lre >= PASS_LRE and not ours[key][1] >= PASS_LRE
    }
    assert not missed, f"lmfit leastsq reaches these, {kind} does not: {missed}"


def test_budget_stopped_nist_fit_is_not_reported_converged(problems):
    bennett5 = next(p for p in problems if p.name == "Bennett5")
    with pytest.warns(match=r"did not converge: max_iter=20 reached"):
        res, value_lre, _ = nist.fit(bennett5, 1, "numpy", max_iter=20)
    assert not res.success and value_lre.min() < PASS_LRE


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_boxbod_plateau_is_flagged_not_reported_converged(problems, backend):
    # from start 1 a solver can drift to b2 ~ 100, where exp(-b2 x) underflows and
    # b2 no longer changes the model: a stationary point, but not the certified minimum
    boxbod = next(p for p in problems if p.name == "BoxBOD")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res, value_lre, _ = nist.fit(boxbod, 1, backend, solver="lm", max_iter=2000)
    assert res.success == (value_lre.min() >= PASS_LRE), res.message
    if not res.success:
        assert "plateau" in res.message or "max_iter" in res.message


def test_nist_files_parse_to_their_certified_shapes(problems):
    assert len(problems) == 27
    for p in problems:
        assert len(p.certified) == len(p.certified_stderr) == len(p.starts[0])
        assert len(p.x) == len(p.y) and np.all(np.isfinite(p.y))
        # the certified values reproduce the certified residual sum of squares
        model = p.model("numpy")
        rss = float(np.sum((model(p.x, **dict(zip(p.param_names, p.certified))) - p.y) ** 2))
        assert rss == pytest.approx(p.certified_rss, rel=1e-6, abs=1e-20), p.name


def test_a_truncated_or_gapped_nist_file_is_refused():
    text = (DATA / "Misra1a.dat").read_text()
    lines = text.splitlines()
    with pytest.raises(ValueError, match=r"'Number of Observations: 14' but the data block has 13"):
        nist.parse("Misra1a", "\n".join(lines[:-1]))
    gapped = "\n".join(line.replace("b2 =", "b3 =", 1) for line in lines)
    with pytest.raises(ValueError, match=r"numbered \[1, 3\] do not run b1 to b2"):
        nist.parse("Misra1a", gapped)


def _trf_on_lsmr_alone(monkeypatch):
    """trf as it ran before it took the exact solver on small problems and an LM finish
    (stop 42): the witness of the stall checks below, which now guard global fits."""
    from tying.fit import solvers

    monkeypatch.setattr(solvers, "TRF_DENSE_MAX_ENTRIES", 0)
    monkeypatch.setattr(solvers, "_polish", lambda ev, data, pmap, tol, out: out)


def test_trf_stalled_far_from_a_minimum_is_not_reported_as_converged(monkeypatch):
    # stop 25 review: solver="trf" on MGH10 from start 1 stopped on ftol after 12
    # evaluations at 4.4e7 x the certified chi2 and reported success=True
    _trf_on_lsmr_alone(monkeypatch)
    problem = nist.load(DATA / "MGH10.dat")
    with pytest.warns(UserWarning) as record:  # ConvergenceWarning, maybe FitWarnings too
        res, value_lre, _ = nist.fit(problem, 1, solver="trf")
    assert value_lre.min() < 1 and res.chi2 > 1e3 * problem.certified_rss
    assert not res.success and "this is not a minimum" in res.message
    assert "the solver stalled" in res.message and "solver='lm'" in res.message
    assert any("did not converge" in str(w.message) for w in record)


def test_trf_converged_cases_keep_success():
    # the orthogonality check of stop 25 must not refuse a trf fit that did converge
    for name in ("MGH09", "Eckerle4", "BoxBOD", "Rat43"):
        problem = nist.load(DATA / f"{name}.dat")
        for start in (1, 2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the model overflows on trial steps
                res, value_lre, _ = nist.fit(problem, start, solver="trf")
            assert res.success and value_lre.min() >= 4, (name, start, res.message)


def test_trf_stopped_far_above_the_lanczos1_minimum_is_not_reported_converged(monkeypatch):
    # stop 35: trf's gtol stop on Lanczos1 left chi2 at 2e11 x (start 1) and 3e10 x
    # (start 2) the certified RSS, values LRE 3.0/3.4, success=True: each Jacobian column
    # alone is near orthogonal to the residuals, the span of the six is not
    _trf_on_lsmr_alone(monkeypatch)
    problem = nist.load(DATA / "Lanczos1.dat")
    for start in (1, 2):
        with pytest.warns(UserWarning) as record:
            res, value_lre, _ = nist.fit(problem, start, solver="trf")
        assert res.chi2 > 1e9 * problem.certified_rss and value_lre.min() < 4
        assert not res.success and "a Gauss-Newton step along" in res.message
        assert any("did not converge" in str(w.message) for w in record)
