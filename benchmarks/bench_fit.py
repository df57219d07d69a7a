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
Run: ``python -m benchmarks fit``.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import compare, timeit, write
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


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def main() -> None:
    rows: list[dict] = []
    try:
        import lmfit  # noqa: F401

        have_lmfit = True
    except ImportError:
        print("lmfit is not installed (pip install 'tying[bench]'): only GlobalFit is timed")
        have_lmfit = False

    for k, repeat in ((20, 3), (50, 1), (200, 1)):
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
    for k in (200, 5000):
        x, y = problem(k)
        lm, trf = ours(x, y, "lm"), ours(x, y, "trf")
        res_lm, res_trf = lm(), trf()
        t_lm, t_trf = compare(lm, trf, repeat=5 if k == 200 else 3, warmup=1)
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
    x, y = problem(1000)
    t_1000 = timeit(ours(x, y), repeat=3, warmup=1)
    rows.append(
        {
            "K": 5000,
            "parameters": 10002,
            "anchor": "scaling of GlobalFit (lm) with K",
            "ours_s": times[5000],
            "time_K200_s": times[200],
            "time_K1000_s": t_1000,
            "ratio_K5000_over_K200": times[5000] / times[200],
            "linear_would_be": 25.0,
        }
    )
    write("fit", rows)


if __name__ == "__main__":
    main()
