"""tying.fit.GlobalFit vs lmfit's multi-data-set recipe (claim C5: cost linear in K).

The problem (the issue's benchmark): K Gaussian peaks, 100 points each,
``center`` and ``width`` shared by all data sets, ``amplitude`` and a flat
``baseline`` per data set, so K = 5,000 has 2 + 2·5,000 = 10,002 fitted
parameters. Same data, same starting point, default tolerances on both sides.

The anchor is lmfit's documented recipe (``examples/example_fit_multi_datasets.py``):
one ``Parameters`` set with ``center_i, width_i, amplitude_i, baseline_i`` for
every data set, ``center_i`` and ``width_i`` tied to data set 0's by ``expr``,
and an objective that concatenates the residuals; run with the default
``leastsq`` and with ``least_squares``.

Rows: per K, the time of each side (interleaved by ``common.compare``), the
ratio, and whether χ² agrees within 1e-6 relative; then GlobalFit alone at
K = 5,000 and the time ratio K=5000 / K=200 (linear scaling ≈ 25).

lmfit at K = 200 takes minutes per fit, so it is timed once (repeat=1).

One fit (issue 17 part 3): the NIST StRD suite (27 problems x 2 starts, one
data set each), CPU time of all 54 fits with default settings, against lmfit's
default ``leastsq`` on the same NumPy models, interleaved in the same run:
GlobalFit with the NumPy models (``backend="numpy"``, finite differences; and
with the default ``backend="auto"``, which takes an arithmetic-only model for
a torch one) and with the torch models (autograd). Goal: NumPy <= 1x lmfit,
torch <= 2x.

Run: ``python -m benchmarks fit`` (``TYING_BENCH_FIT=k1`` for the K = 1 rows only).
"""

from __future__ import annotations

import os
import pathlib
import time
import warnings

import numpy as np
import torch

from benchmarks.common import SMOKE, compare, smoke, timeit, write
from tying.fit import GlobalFit

N_POINTS = 100
INIT = {"center": 0.0, "width": 1.0, "amplitude": 1.0, "baseline": 0.0}
NOISE = 0.05


def peak(x, center, width, amplitude, baseline):
    return amplitude * np.exp(-0.5 * ((x - center) / width) ** 2) + baseline


def problem(k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x ``(100,)`` and y ``(K, 100)``: shared center 0.4 and width 1.2."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-5, 5, N_POINTS)
    amp = rng.uniform(0.5, 3.0, (k, 1))
    base = rng.uniform(-0.2, 0.2, (k, 1))
    y = peak(x, 0.4, 1.2, amp, base) + rng.normal(0, NOISE, (k, N_POINTS))
    return x, y


def ours(x: np.ndarray, y: np.ndarray, solver: str = "lm"):
    def run():
        return GlobalFit(
            peak,
            [(x, yi, NOISE) for yi in y],
            shared=["center", "width"],
            local=["amplitude", "baseline"],
            init=INIT,
            solver=solver,
        ).run()

    return run


def lmfit_recipe(x: np.ndarray, y: np.ndarray, method: str):
    import lmfit

    def objective(params, x, data):
        resid = np.empty_like(data)
        for i in range(len(data)):
            model = peak(
                x,
                params[f"center_{i}"].value,
                params[f"width_{i}"].value,
                params[f"amplitude_{i}"].value,
                params[f"baseline_{i}"].value,
            )
            resid[i] = (model - data[i]) / NOISE
        return resid.ravel()

    def run():
        params = lmfit.Parameters()
        for i in range(len(y)):
            for name, value in INIT.items():
                params.add(f"{name}_{i}", value=value)
            if i:
                params[f"center_{i}"].expr = "center_0"
                params[f"width_{i}"].expr = "width_0"
        return lmfit.minimize(objective, params, args=(x, y), method=method)

    return run


NIST_DIR = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fit" / "data" / "nist-strd"


def nist_suite(backend: str, force: bool = True):
    """All 54 NIST fits with GlobalFit defaults; ``force`` passes ``backend`` to GlobalFit."""
    import tying.fit.nist as nist

    problems = nist.problems(NIST_DIR)
    models = {p.name: p.model(backend) for p in problems}
    kw = {"backend": backend} if force else {}

    def run():
        passed = 0
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # the expected non-converged case warns
            for p in problems:
                for start in (1, 2):
                    res = GlobalFit(
                        models[p.name], [(p.x, p.y)], shared=p.param_names, init=p.init(start), **kw
                    ).run()
                    values = [res.values[n] for n in p.param_names]
                    passed += bool(nist.lre(values, p.certified).min() >= 4)
        return passed

    return run


def nist_lmfit():
    """The same 54 fits with lmfit's default ``leastsq`` on the NumPy models."""
    import lmfit  # noqa: F401 - fails early, with its name, when the anchor is missing

    import tying.fit.nist as nist

    problems = nist.problems(NIST_DIR)
    models = {p.name: p.model("numpy") for p in problems}

    def run():
        passed = 0
        for p in problems:
            for start in (1, 2):
                out, value_lre, _ = nist.fit_lmfit(p, start, models[p.name])
                passed += out is not None and bool(value_lre.min() >= 4)
        return passed

    return run


def k1_rows(repeat: int = 5) -> list[dict]:
    """CPU time of the 54 NIST fits: GlobalFit vs lmfit leastsq, interleaved, same run."""
    rows = []
    anchor = nist_lmfit()
    anchor_passed = anchor()
    for label, backend, force in (
        ("GlobalFit, NumPy models (backend='numpy')", "numpy", True),
        ("GlobalFit, NumPy models (backend='auto')", "numpy", False),
        ("GlobalFit, torch models", "torch", True),
    ):
        mine = nist_suite(backend, force)
        passed = mine()
        ratios = []
        for _ in range(smoke(3, 1)):  # three interleaved measurements: the spread is reported
            t_ours, t_anchor = compare(
                mine, anchor, repeat=repeat, warmup=1, clock=time.process_time
            )
            ratios.append(t_ours / t_anchor)
        rows.append(
            {
                "K": 1,
                "problem": "NIST StRD, 54 fits",
                "ours": label,
                "anchor": "lmfit leastsq (default)",
                "ours_cpu_s": t_ours,
                "anchor_cpu_s": t_anchor,
                "ours_over_anchor": float(np.median(ratios)),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "cases_lre4_ours": passed,
                "cases_lre4_anchor": anchor_passed,
            }
        )
        print(rows[-1], flush=True)
    return rows


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def main() -> None:
    torch.set_num_threads(1)
    rows: list[dict] = []
    try:
        import lmfit  # noqa: F401

        have_lmfit = True
    except ImportError:
        print("lmfit is not installed (pip install 'tying[bench]'): only GlobalFit is timed")
        have_lmfit = False

    if have_lmfit:
        rows += k1_rows()
    if os.environ.get("TYING_BENCH_FIT") == "k1":
        write("fit", rows)
        return

    sizes = ((20, 3), (50, 1), (200, 1)) if not SMOKE else ((3, 1), (5, 1))
    for k, repeat in sizes:
        x, y = problem(k)
        mine = ours(x, y)
        ref_chi2 = mine().chi2
        for method in ("leastsq", "least_squares") if have_lmfit else ():
            fit_once = lmfit_recipe(x, y, method)
            last: dict = {}

            def anchor(fit_once=fit_once, last=last):
                last["out"] = fit_once()
                return last["out"]

            # lmfit at K = 200 takes minutes per fit: it is timed once there
            t_ours, t_anchor = compare(mine, anchor, repeat=repeat, warmup=0)
            out = last["out"]
            rows.append(
                {
                    "K": k,
                    "parameters": 2 + 2 * k,
                    "anchor": f"lmfit {method}",
                    "ours_s": t_ours,
                    "anchor_s": t_anchor,
                    "speedup": t_anchor / t_ours,
                    "chi2_ours": ref_chi2,
                    "chi2_anchor": out.chisqr,
                    "chi2_rel_diff": _rel(ref_chi2, out.chisqr),
                    "chi2_equal_1e-6": _rel(ref_chi2, out.chisqr) < 1e-6,
                    "anchor_nfev": out.nfev,
                }
            )
            print(rows[-1], flush=True)

    # our two solvers: Schur-complement LM vs scipy trf + lsmr on the sparse Jacobian
    times = {}
    k_small, k_large = smoke(200, 10), smoke(5000, 50)
    for k in (k_small, k_large):
        x, y = problem(k)
        lm, trf = ours(x, y, "lm"), ours(x, y, "trf")
        res_lm, res_trf = lm(), trf()
        t_lm, t_trf = compare(lm, trf, repeat=5 if k == k_small else 3, warmup=1)
        times[k] = t_lm
        rows.append(
            {
                "K": k,
                "parameters": res_lm.nvarys,
                "anchor": "GlobalFit solver='trf' (scipy trf + lsmr, sparse J)",
                "ours_s": t_lm,
                "anchor_s": t_trf,
                "speedup": t_trf / t_lm,
                "chi2_ours": res_lm.chi2,
                "chi2_anchor": res_trf.chi2,
                "chi2_rel_diff": _rel(res_lm.chi2, res_trf.chi2),
                "chi2_equal_1e-6": _rel(res_lm.chi2, res_trf.chi2) < 1e-6,
                "anchor_nfev": res_trf.nfev,
            }
        )
        print(rows[-1], flush=True)
    k_mid = smoke(1000, 20)
    x, y = problem(k_mid)
    t_mid = timeit(ours(x, y), repeat=3, warmup=1)
    rows.append(
        {
            "K": k_large,
            "parameters": 2 + 2 * k_large,
            "anchor": "scaling of GlobalFit (lm) with K",
            "ours_s": times[k_large],
            f"time_K{k_small}_s": times[k_small],
            f"time_K{k_mid}_s": t_mid,
            f"ratio_K{k_large}_over_K{k_small}": times[k_large] / times[k_small],
            "linear_would_be": k_large / k_small,
        }
    )
    write("fit", rows)


if __name__ == "__main__":
    main()
