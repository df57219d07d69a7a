"""A stateful guard for GlobalFit (stop 49): chained user operations vs lmfit.

The machine keeps a plain description of the fit beside the ``GlobalFit`` (data
sets, roles, bounds, starts, solver). Rules are the edits a user chains: add or
remove a data set, share or unshare a parameter, fix or free it, set bounds (a
reversed pair must be refused by name and leave the fit unchanged), set starts,
pick a solver, fit, continue a fit from its result, copy and pickle the result.
After every fit, chi2 and best-fit values must equal lmfit's on the same problem
(ties written as lmfit expressions), standard errors where both report them.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import lmfit
import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import tying.fit

X = np.linspace(0.0, 3.0, 12)
TRUE_RATE = 0.9


def decay(x, amp, rate):
    """An exponential decay: well conditioned on x in [0, 3]."""
    return amp * np.exp(-rate * x)


def make_dataset(seed: int, amp: float, rate: float = TRUE_RATE, dtype=np.float64):
    rng = np.random.default_rng(seed)
    y = (decay(X, amp, rate) + rng.normal(0.0, 0.01, X.size)).astype(dtype)
    return (X.astype(dtype), y, 0.01, {"inst": "AB"[seed % 2]})


def lmfit_reference(datasets, roles, fixed, init, bounds):
    """The same fit in lmfit: one amp_i, rate_i per data set, ties as expressions."""
    params = lmfit.Parameters()
    insts = [d[3]["inst"] for d in datasets]
    for i in range(len(datasets)):
        for name in ("amp", "rate"):
            lo, hi = bounds.get(name, (-np.inf, np.inf))
            label = f"{name}_{i}"
            owner = {"shared": 0, "group": insts.index(insts[i])}.get(roles[name], i)
            if name in fixed:
                params.add(label, value=fixed[name], vary=False)
            elif owner != i:
                params.add(label, expr=f"{name}_{owner}")
            else:
                params.add(label, value=init[name], min=lo, max=hi)

    def residual(p):
        return np.concatenate(
            [
                (y - decay(x, p[f"amp_{i}"].value, p[f"rate_{i}"].value)) / s
                for i, (x, y, s, _) in enumerate(
                    [tuple(np.asarray(a, float) for a in d[:3]) + (None,) for d in datasets]
                )
            ]
        )

    # lmfit's default ftol (1.5e-8) stops short on a misspecified model (a fixed amp);
    # the tight tolerances make it the reference for the best-fit values too
    if not bounds:
        return lmfit.minimize(residual, params, method="leastsq", ftol=1e-13, xtol=1e-13)
    return lmfit.minimize(residual, params, method="least_squares", ftol=1e-13, xtol=1e-13)


class GlobalFitMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.datasets = [make_dataset(0, 1.0), make_dataset(1, 2.0)]
        self.roles = {"amp": "local", "rate": "shared"}
        self.fixed: dict[str, float] = {}
        self.bounds: dict[str, tuple[float, float]] = {}
        self.init = {"amp": 1.5, "rate": 0.5}
        self.solver = "lm"
        self.result = None
        self.next_seed = 2
        # one GlobalFit for the whole run, edited by attribute as a user would
        self.gf = tying.fit.GlobalFit(decay, [])

    def _build(self) -> tying.fit.GlobalFit:
        names = ("amp", "rate")
        gf = self.gf
        gf.datasets = list(self.datasets)
        free = [n for n in names if n not in self.fixed]
        gf.shared = [n for n in free if self.roles[n] == "shared"]
        gf.local = [n for n in free if self.roles[n] == "local"]
        gf.per_group = {n: "inst" for n in free if self.roles[n] == "group"}
        gf.fixed = dict(self.fixed)
        gf.init = {n: v for n, v in self.init.items() if n not in self.fixed}
        gf.bounds = dict(self.bounds)
        gf.solver = self.solver
        return gf

    def _snapshot(self):
        return (
            [
                tuple(np.copy(a) if isinstance(a, np.ndarray) else a for a in d)
                for d in self.datasets
            ],
            dict(self.roles),
            dict(self.fixed),
            dict(self.bounds),
            dict(self.init),
            self.solver,
        )

    # -- edits ----------------------------------------------------------------

    @precondition(lambda self: len(self.datasets) < 4)
    @rule(amp=st.sampled_from([0.5, 1.0, 3.0]), dtype=st.sampled_from([np.float64, np.float32]))
    def add_dataset(self, amp, dtype):
        self.datasets.append(make_dataset(self.next_seed, amp, dtype=dtype))
        self.next_seed += 1
        self.result = None

    @precondition(lambda self: len(self.datasets) > 1)
    @rule(i=st.integers(0, 3))
    def remove_dataset(self, i):
        del self.datasets[i % len(self.datasets)]
        self.result = None

    @rule(name=st.sampled_from(["amp", "rate"]), role=st.sampled_from(["shared", "group", "local"]))
    def set_role(self, name, role):
        self.roles[name] = role
        self.result = None

    @rule(name=st.sampled_from(["amp", "rate"]), value=st.sampled_from([0.8, 1.0, 2.0]))
    def fix(self, name, value):
        if len(self.fixed) == 1 and name not in self.fixed:
            return  # keep one parameter free
        self.fixed[name] = value
        self.bounds.pop(name, None)
        self.result = None

    @rule(name=st.sampled_from(["amp", "rate"]))
    def free(self, name):
        self.fixed.pop(name, None)
        self.result = None

    @rule(name=st.sampled_from(["amp", "rate"]), lo=st.sampled_from([0.0, 0.1]))
    def set_bounds(self, name, lo):
        if name in self.fixed:
            return
        self.bounds[name] = (lo, 10.0)
        self.init[name] = min(max(self.init[name], lo + 0.05), 9.0)
        self.result = None

    @rule(name=st.sampled_from(["amp", "rate"]))
    def set_reversed_bounds_refused(self, name):
        if name in self.fixed:
            return
        before = self._snapshot()
        fit = self._build()
        last = getattr(fit, "result_", None)
        last_x = None if last is None else (last.chi2, last.x.copy())
        fit.bounds = {**self.bounds, name: (5.0, 0.0)}
        with pytest.raises(ValueError, match=rf"bounds\['{name}'\].*lower must be < upper"):
            fit.run()
        fit.bounds = dict(self.bounds)
        assert repr(before) == repr(self._snapshot())
        # the failed run left the last result as it was
        assert getattr(fit, "result_", None) is last
        if last is not None:
            assert last.chi2 == last_x[0]
            np.testing.assert_array_equal(last.x, last_x[1])

    @precondition(lambda self: self.result is not None)
    @rule(i=st.integers(0, 3))
    def edit_data_in_place(self, i):
        # a user reusing the arrays for the next measurement: the result keeps its own data
        r = self.result
        i %= len(self.datasets)
        chi2, best, res = r.chi2, r.best_fit(i).copy(), r.residual(i).copy()
        y = self.datasets[i][1]
        y *= 1.01
        assert r.chi2 == chi2
        np.testing.assert_array_equal(r.best_fit(i), best)
        np.testing.assert_array_equal(r.residual(i), res)
        self.result = None  # a result of other data: refit_from_result would compare across

    @rule(name=st.sampled_from(["amp", "rate"]), value=st.sampled_from([0.3, 1.2, 4.0]))
    def set_start(self, name, value):
        lo, hi = self.bounds.get(name, (-np.inf, np.inf))
        self.init[name] = float(np.clip(value, lo + 0.05, hi - 1.0))
        self.result = None

    @rule(solver=st.sampled_from(["lm", "trf"]))
    def pick_solver(self, solver):
        self.solver = solver

    # -- fits -----------------------------------------------------------------

    def _fit_and_compare(self):
        fit = self._build()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bound hit is named; compared below
            result = fit.run()
        assert result.success, result.message
        ref = lmfit_reference(self.datasets, self.roles, self.fixed, self.init, self.bounds)
        assert ref.success
        assert result.chi2 == pytest.approx(ref.chisqr, rel=1e-6, abs=1e-9)
        assert result.nvarys == ref.nvarys
        for name in ("amp", "rate"):
            ours = [result.params(i)[name] for i in range(len(self.datasets))]
            theirs = [ref.params[f"{name}_{i}"].value for i in range(len(self.datasets))]
            # chi2 (the stopping test's quantity) agrees to 1e-6; a local parameter of a
            # data set whose chi2 is a small share of the total converges only as far as
            # the total's ftol asks (start; add 0.5; add 3.0; fix amp=1; rate local; fit:
            # rate[2] 2.040660 vs 2.040682, 1e-5 relative, 7e-4 of its standard error),
            # so values agree to 1e-5 relative or 1e-2 of their standard error
            errs = np.nan_to_num([result.stderrs(i)[name] for i in range(len(self.datasets))])
            gap = np.abs(np.subtract(ours, theirs))
            assert np.all(gap <= np.maximum(1e-5 * np.abs(theirs) + 1e-7, 1e-2 * errs)), (
                name,
                ours,
                theirs,
                errs,
            )
            if not self.bounds and ref.errorbars and result.errorbars and name not in self.fixed:
                ours_e = [result.stderrs(i)[name] for i in range(len(self.datasets))]
                theirs_e = [ref.params[f"{name}_{i}"].stderr for i in range(len(self.datasets))]
                np.testing.assert_allclose(ours_e, theirs_e, rtol=1e-3)
        self.result = result
        return fit

    @rule()
    def fit(self):
        self._fit_and_compare()

    @precondition(lambda self: self.result is not None)
    @rule()
    def refit_from_result(self):
        before = self.result
        for name in ("amp", "rate"):
            if name not in self.fixed:
                v = before.values[name]
                v = list(v.values()) if isinstance(v, dict) else np.asarray(v, float)
                self.init[name] = float(np.mean(v))
        lo_ok = all(
            self.bounds.get(n, (-np.inf, np.inf))[0]
            <= self.init[n]
            <= self.bounds.get(n, (-np.inf, np.inf))[1]
            for n in self.init
        )
        if not lo_ok:
            return
        self._fit_and_compare()
        assert self.result.chi2 <= before.chi2 * (1 + 1e-6) + 1e-9

    @rule()
    def count_parameters(self):
        k = len(self.datasets)
        n_groups = len({d[3]["inst"] for d in self.datasets})
        free = [n for n in ("amp", "rate") if n not in self.fixed]
        per_role = {"shared": 1, "group": n_groups, "local": k}
        count = self._build().n_parameters()
        assert count.logical == k * len(free)
        assert count.physical == sum(per_role[self.roles[n]] for n in free)

    @precondition(lambda self: self.result is not None)
    @rule()
    def copy_and_pickle_result(self):
        r = self.result
        for other in (copy.deepcopy(r), pickle.loads(pickle.dumps(r))):
            assert other.chi2 == r.chi2
            np.testing.assert_array_equal(other.x, r.x)
            for i in range(len(self.datasets)):
                np.testing.assert_array_equal(other.best_fit(i), r.best_fit(i))
                np.testing.assert_array_equal(other.predict(i, X[:3]), r.predict(i, X[:3]))

    @precondition(lambda self: self.result is not None)
    @invariant()
    def evaluation_matches_model(self):
        r = self.result
        for i in range(len(self.datasets)):
            p = r.params(i)
            x = np.asarray(self.datasets[i][0], float)  # float32 data sets hold float32 x
            np.testing.assert_allclose(r.best_fit(i), decay(x, p["amp"], p["rate"]), rtol=1e-12)
            xs = np.array([0.25, 1.5])
            np.testing.assert_allclose(r.predict(i, xs), decay(xs, p["amp"], p["rate"]), rtol=1e-12)
            chi = np.sum(r.residual(i) ** 2)
            assert chi == pytest.approx(r.chi2_of(i), rel=1e-12)


GlobalFitMachine.TestCase.settings = settings(
    max_examples=20, stateful_step_count=9, deadline=None, derandomize=True
)
TestGlobalFit = GlobalFitMachine.TestCase


def test_fixed_amp_misspecified_matches_tight_lmfit():
    """The machine's first disagreement (start; fix amp=0.8; fit): lmfit's default ftol
    stopped at chi2 30510.337639 where the minimum is 30510.337634; ours is the minimum."""
    datasets = [make_dataset(0, 1.0), make_dataset(1, 2.0)]
    roles, fixed, init = {"amp": "local", "rate": "shared"}, {"amp": 0.8}, {"rate": 0.5}
    for solver in ("lm", "trf"):
        fit = tying.fit.GlobalFit(
            decay, datasets, shared=["rate"], fixed=fixed, init=init, solver=solver
        )
        result = fit.run()
        ref = lmfit_reference(datasets, roles, fixed, {"amp": 1.0, **init}, {})
        assert result.success
        assert result.chi2 == pytest.approx(ref.chisqr, rel=1e-12)
        assert result.values["rate"] == pytest.approx(ref.params["rate_0"].value, rel=1e-6)
        assert result.stderr["rate"] == pytest.approx(ref.params["rate_0"].stderr, rel=1e-4)


def test_failed_run_keeps_last_result():
    """A refused run (reversed bounds) after a fit leaves result_ and the declaration."""
    datasets = [make_dataset(0, 1.0), make_dataset(1, 2.0)]
    fit = tying.fit.GlobalFit(
        decay, datasets, shared=["rate"], local=["amp"], init={"rate": 0.5, "amp": 1.0}
    )
    last = fit.run()
    x = last.x.copy()
    fit.bounds = {"rate": (5.0, 0.0)}
    with pytest.raises(ValueError, match=r"bounds\['rate'\] = \(5.0, 0.0\): lower must be < upper"):
        fit.run()
    assert fit.result_ is last
    np.testing.assert_array_equal(fit.result_.x, x)
