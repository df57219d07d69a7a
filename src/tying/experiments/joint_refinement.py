"""C5 ``joint-refinement``: two diffraction patterns, one crystal, refined jointly.

A cubic (fcc) crystal with lattice constant ``a`` is measured on two powder
diffractometers: an X-ray one (Cu Kα, λ = 1.5406 Å, narrow peaks) and a
neutron one (λ = 1.594 Å, broader peaks). Peak positions follow Bragg's law,
``λ = 2 d sin θ`` with ``d = a / √(h² + k² + l²)``; intensities follow one
structure-factor model (fcc multiplicities, Lorentz(-polarisation) factor,
a shared Debye–Waller factor ``B``, and each radiation's known form-factor
fall-off). Each instrument has its own zero shift, peak width and scale, each
pattern its own flat background.

The physically right fit (Rietveld's joint refinement) ties the crystal's
parameters across the data sets and leaves the instruments' free:

    GlobalFit(pattern, [xray, neutron], shared=["a", "B"],
              per_group={"zero": "instrument", "width": "instrument", "scale": "instrument"},
              local=["background"], fixed={"wavelength": ..., ...})

The check (claim C5), over several noise seeds so that it is not a coin flip:
the joint fit's ``a`` has a smaller RMS error than either separate fit, its
standard error is smaller than either separate fit's, and every instrument's
zero shift and width stay its own (within 4 σ of its own true value).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math

import numpy as np
import torch
from matplotlib.figure import Figure

from tying.experiments.common import largest, smallest
from tying.experiments.registry import Result, Table, check_size, experiment
from tying.fit import GlobalFit
from tying.report.format import format_number

log = logging.getLogger("tying.experiments")


@dataclasses.dataclass(frozen=True)
class Instrument:
    """One diffractometer and what it measures."""

    name: str
    wavelength: float  # Å; fixed, known
    zero: float  # true zero shift of the 2θ scale (degrees)
    width: float  # true peak FWHM (degrees)
    scale: float  # true intensity scale
    background: float  # true flat background (counts)
    form_decay: (
        float  # Å²: |f(s)|² ∝ exp(-2·form_decay·s²); X-ray form factors fall, neutron ones do not
    )
    polarised: float  # 1 for X-rays (Lorentz-polarisation factor), 0 for neutrons (Lorentz only)


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes and truths of the experiment (gold-like fcc crystal)."""

    a: float = 4.0782  # Å, the shared lattice constant to recover
    B: float = 0.6  # Å², shared isotropic Debye–Waller factor
    two_theta: tuple[float, float] = (25.0, 140.0)  # measured range (degrees)
    step: float = 0.05  # degrees between points
    # noise realisations the check averages over: the joint fit's gain in σ(a) is at most
    # √2 (two independent instruments), so an RMS comparison needs tens of seeds to be
    # more than a coin flip (simulated chance of a wrong verdict: 24 seeds ~2 %, 60 ~0.03 %)
    seeds: int = 24
    start_offset: float = -0.0015  # Å: the refinement starts from a slightly wrong a
    xray: Instrument = Instrument("X-ray", 1.5406, 0.030, 0.10, 0.45, 30.0, 1.6, 1.0)
    neutron: Instrument = Instrument("neutron", 1.594, -0.045, 0.30, 2.0, 80.0, 0.0, 0.0)


CONFIGS = {
    "quick": Config(),
    "report": Config(step=0.025, seeds=60),
}


def _reflections(max_n: int = 27) -> tuple[np.ndarray, np.ndarray]:
    """fcc reflections (h, k, l all even or all odd): h²+k²+l² and multiplicity of each family."""
    fams: dict[tuple[int, int, int], int] = {}
    for hkl in itertools.product(range(-7, 8), repeat=3):
        if hkl == (0, 0, 0) or len({v % 2 for v in hkl}) != 1:
            continue
        n = sum(v * v for v in hkl)
        if n <= max_n:
            key = tuple(sorted((abs(v) for v in hkl), reverse=True))
            fams[key] = fams.get(key, 0) + 1
    keys = sorted(fams, key=lambda k: sum(v * v for v in k))
    return (
        np.array([sum(v * v for v in k) for k in keys], dtype=float),
        np.array([fams[k] for k in keys], dtype=float),
    )


# h²+k²+l² ≤ 27 reaches past 2θ = 140° for both wavelengths (Cu Kα: 2θ(422) = 136°)
HKL_N, MULTIPLICITY = _reflections()
_N = torch.tensor(HKL_N, dtype=torch.float64)
_M = torch.tensor(MULTIPLICITY, dtype=torch.float64)
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def pattern(two_theta, a, B, zero, width, scale, background, wavelength, form_decay, polarised):
    """Powder pattern of an fcc crystal (torch, so the fit's Jacobian is exact).

    Works on one data set (``two_theta`` ``(n,)``, parameters scalars) and on
    all at once (``two_theta`` ``(K, n)``, parameters ``(K, 1)``): every
    parameter gets a trailing reflection axis.
    """
    a, B, zero, width, scale, wavelength, form_decay, polarised = (
        torch.as_tensor(v, dtype=torch.float64)[..., None]
        for v in (a, B, zero, width, scale, wavelength, form_decay, polarised)
    )
    sin_t = wavelength * torch.sqrt(_N) / (2 * a)  # (..., R) Bragg: λ = 2 d sin θ
    seen = sin_t < 0.999  # reflections the wavelength can reach
    sin_t = torch.where(seen, sin_t, torch.full_like(sin_t, 0.5))
    theta = torch.asin(sin_t)
    peak = torch.rad2deg(2 * theta) + zero  # (..., R) peak positions in 2θ (degrees)
    s2 = (sin_t / wavelength) ** 2  # (sin θ / λ)²
    cos2t = torch.cos(2 * theta)
    lp = (1 - polarised + polarised * 0.5 * (1 + cos2t**2)) / (sin_t**2 * torch.cos(theta))
    intensity = _M * lp * torch.exp(-2 * (B + form_decay) * s2) * seen  # (..., R)
    sigma = width * _FWHM_TO_SIGMA  # (..., 1)
    if isinstance(two_theta, np.ndarray) and not two_theta.flags.writeable:
        two_theta = two_theta.copy()  # the fit hands x read-only: as_tensor of it warns
    x = torch.as_tensor(two_theta, dtype=torch.float64)[..., None]  # (..., n, 1)
    z = (x - peak) / sigma  # (..., n, R): parameters' (K, 1, R) meets x's (K, n, 1)
    profile = torch.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
    return torch.as_tensor(background) + scale[..., 0] * (profile * intensity).sum(-1)


def _truth(cfg: Config, inst: Instrument) -> dict[str, float]:
    return {
        "a": cfg.a,
        "B": cfg.B,
        "zero": inst.zero,
        "width": inst.width,
        "scale": inst.scale,
        "background": inst.background,
        "wavelength": inst.wavelength,
        "form_decay": inst.form_decay,
        "polarised": inst.polarised,
    }


def simulate(cfg: Config, rng: np.random.Generator) -> list[dict]:
    """Both patterns with Poisson counting noise; σ from the observed counts (Rietveld's weights)."""
    x = np.arange(cfg.two_theta[0], cfg.two_theta[1], cfg.step)
    datasets = []
    for inst in (cfg.xray, cfg.neutron):
        with torch.no_grad():
            mean = pattern(torch.from_numpy(x), **_truth(cfg, inst)).numpy()
        counts = rng.poisson(mean).astype(float)
        datasets.append(
            {
                "x": x,
                "y": counts,
                "sigma": np.sqrt(np.maximum(counts, 1.0)),
                "metadata": {"instrument": inst.name},
                "name": inst.name,
            }
        )
    return datasets


def refine(cfg: Config, datasets: list[dict]):
    """Joint (or, with one data set, separate) refinement of the given patterns."""
    insts = [cfg.xray if d["metadata"]["instrument"] == "X-ray" else cfg.neutron for d in datasets]
    fit = GlobalFit(
        pattern,
        datasets,
        shared=["a", "B"],
        per_group={"zero": "instrument", "width": "instrument", "scale": "instrument"},
        local=["background"],
        fixed={
            "wavelength": [i.wavelength for i in insts],
            "form_decay": [i.form_decay for i in insts],
            "polarised": [i.polarised for i in insts],
        },
        # a plausible starting model: a slightly off, no zero shift, rough widths and scales
        init={
            "a": cfg.a + cfg.start_offset,
            "B": 1.0,
            "zero": 0.0,
            "width": {i.name: 1.5 * i.width for i in insts},
            "scale": {i.name: 0.7 * i.scale for i in insts},
            "background": [float(np.median(d["y"])) for d in datasets],
        },
        bounds={"width": (1e-3, None), "scale": (0.0, None), "B": (-1.0, 5.0)},
    )
    return fit.run()


@experiment("joint-refinement")
def joint_refinement(size: str, seed: int) -> Result:
    check_size(size)
    cfg = CONFIGS[size]
    rows = []
    for s in range(cfg.seeds):
        rng = np.random.default_rng([seed, s])
        data = simulate(cfg, rng)
        joint = refine(cfg, data)
        xray, neutron = refine(cfg, data[:1]), refine(cfg, data[1:])
        if s == 0:
            first_data, joint0 = data, joint  # drawn in the figures and tables
        own = all(
            abs(joint.values[p][inst.name] - getattr(inst, p)) < 4 * joint.stderr[p][inst.name]
            for p in ("zero", "width")
            for inst in (cfg.xray, cfg.neutron)
        )
        corr = joint.correlation
        names = joint.covariance_names
        rows.append(
            {
                "noise seed": s,
                "a joint − true (mÅ)": 1e3 * (joint.values["a"] - cfg.a),
                "σ joint (mÅ)": 1e3 * joint.stderr["a"],
                "a X-ray only − true (mÅ)": 1e3 * (xray.values["a"] - cfg.a),
                "σ X-ray only (mÅ)": 1e3 * xray.stderr["a"],
                "a neutron only − true (mÅ)": 1e3 * (neutron.values["a"] - cfg.a),
                "σ neutron only (mÅ)": 1e3 * neutron.stderr["a"],
                "corr(zero X-ray, zero neutron)": float(
                    corr[names.index("zero[X-ray]"), names.index("zero[neutron]")]
                ),
                "instrument params own": own,
                "converged": joint.success and xray.success and neutron.success,
            }
        )
        log.info("joint-refinement seed %d: %s", s, rows[-1])

    fits = {
        "joint": ("a joint − true (mÅ)", "σ joint (mÅ)"),
        "X-ray only": ("a X-ray only − true (mÅ)", "σ X-ray only (mÅ)"),
        "neutron only": ("a neutron only − true (mÅ)", "σ neutron only (mÅ)"),
    }
    summary = []
    for label, (err, sig) in fits.items():
        errors = np.array([r[err] for r in rows])
        sigmas = np.array([r[sig] for r in rows])
        summary.append(
            {
                "refinement": label,
                "RMS error of a (mÅ)": float(np.sqrt(np.mean(errors**2))),
                "mean σ(a) (mÅ)": float(np.mean(sigmas)),
                "RMS of (a − true)/σ": float(np.sqrt(np.mean((errors / sigmas) ** 2))),
                "mean a − true (mÅ)": float(np.mean(errors)),
            }
        )
    joint_s, xray_s, neutron_s = summary
    sigma_smallest = all(
        r["σ joint (mÅ)"] < smallest([r["σ X-ray only (mÅ)"], r["σ neutron only (mÅ)"]])
        for r in rows
    )
    measured = {
        "RMS error a joint (mÅ)": joint_s["RMS error of a (mÅ)"],
        "RMS error a X-ray only (mÅ)": xray_s["RMS error of a (mÅ)"],
        "RMS error a neutron only (mÅ)": neutron_s["RMS error of a (mÅ)"],
        "mean σ(a) joint (mÅ)": joint_s["mean σ(a) (mÅ)"],
        "mean σ(a) X-ray only (mÅ)": xray_s["mean σ(a) (mÅ)"],
        "mean σ(a) neutron only (mÅ)": neutron_s["mean σ(a) (mÅ)"],
        "joint σ(a) smallest in every seed": sigma_smallest,
        "max |corr(zero X-ray, zero neutron)|": largest(
            abs(r["corr(zero X-ray, zero neutron)"]) for r in rows
        ),
        "instrument parameters own in every seed": all(r["instrument params own"] for r in rows),
        "all fits converged": all(r["converged"] for r in rows),
        "noise seeds": cfg.seeds,
    }
    best_separate = smallest([xray_s["RMS error of a (mÅ)"], neutron_s["RMS error of a (mÅ)"]])
    passed = bool(
        joint_s["RMS error of a (mÅ)"] < best_separate
        and sigma_smallest
        and measured["instrument parameters own in every seed"]
        and measured["all fits converged"]
    )
    return Result(
        tables=[
            Table(f"lattice constant a over {cfg.seeds} noise seeds (true a = {cfg.a} Å)", summary),
            _parameter_table(cfg, joint0),
            _covariance_table(joint0),
            Table("per noise seed: joint vs separate refinement", rows),
        ],
        figures={
            "patterns": _pattern_figure(first_data, joint0),
            "lattice_constant": _estimates_figure(summary, rows, fits),
        },
        passed=passed,
        measured=measured,
        key_figure=(
            f"RMS error of a: joint {format_number(joint_s['RMS error of a (mÅ)'], 4)} mÅ vs X-ray only "
            f"{format_number(xray_s['RMS error of a (mÅ)'], 4)}, neutron only "
            f"{format_number(neutron_s['RMS error of a (mÅ)'], 4)} ({cfg.seeds} seeds)"
        ),
        notes=(
            f"Both patterns are simulated from one fcc crystal (a = {cfg.a} Å) with Poisson "
            "noise. Joint: a and B shared; zero shift, width and scale per instrument "
            "(per_group); background per pattern; wavelength and radiation constants fixed per "
            "pattern. Separate: each pattern refined alone with the same model. Standard errors "
            "and covariance follow lmfit's convention ((JᵀJ)⁻¹ scaled by the reduced χ²). "
            "Passes when, over all noise seeds, the joint a has a smaller RMS error than either "
            "separate refinement, its standard error is the smallest in every seed, every "
            "instrument's zero shift and width stay within 4σ of that instrument's own truth, and "
            "every fit converged. With two independent instruments the joint σ(a) can be at most "
            "√2 below the better one, hence the many seeds."
        ),
    )


def _parameter_table(cfg: Config, res) -> Table:
    rows = [
        {
            "parameter": name,
            "role": "shared",
            "true": getattr(cfg, name),
            "joint fit": res.values[name],
            "stderr": res.stderr[name],
        }
        for name in ("a", "B")
    ]
    for p in ("zero", "width", "scale"):
        for inst in (cfg.xray, cfg.neutron):
            rows.append(
                {
                    "parameter": f"{p}[{inst.name}]",
                    "role": "per instrument",
                    "true": getattr(inst, p),
                    "joint fit": res.values[p][inst.name],
                    "stderr": res.stderr[p][inst.name],
                }
            )
    return Table(f"joint fit, noise seed 0 (reduced χ² = {format_number(res.redchi, 4)})", rows)


def _covariance_table(res) -> Table:
    names = res.covariance_names
    corr = res.correlation
    keep = [n for n in names if n.split("[")[0] in ("a", "B", "zero", "width")]
    rows = []
    for n in keep:
        i = names.index(n)
        row = {"parameter": n, "stderr": math.sqrt(res.covariance[i, i])}
        row.update({f"corr {m}": corr[i, names.index(m)] for m in keep})
        rows.append(row)
    return Table("joint fit covariance (noise seed 0): standard errors and correlations", rows)


def _pattern_figure(data: list[dict], res) -> Figure:
    fig = Figure(figsize=(11, 5.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex="col", height_ratios=[3, 1])
    for col, d in enumerate(data):
        top, bottom = axes[0, col], axes[1, col]
        top.plot(d["x"], d["y"], ".", ms=1.5, color="0.5", label="counts")
        top.plot(d["x"], res.best_fit(col), color="C3", lw=0.9, label="joint fit")
        inst = d["metadata"]["instrument"]
        top.set_title(
            f"{inst}: zero {format_number(res.values['zero'][inst], 5, sign=True)}°, width {format_number(res.values['width'][inst], 4)}°"
        )
        top.set_ylabel("counts")
        top.legend(loc="upper right", fontsize=8)
        bottom.plot(d["x"], res.residual(col), lw=0.5, color="C0")
        bottom.axhline(0.0, color="0.3", lw=0.6)
        bottom.set_xlabel("2θ (degrees)")
        bottom.set_ylabel("(y − fit)/σ")
    fig.suptitle(
        f"one crystal, two instruments: a = {format_number(res.values['a'], 6)} ± {format_number(res.stderr['a'], 6)} Å "
        f"(joint, reduced χ² {format_number(res.redchi)})"
    )
    return fig


def _estimates_figure(summary: list[dict], rows: list[dict], fits: dict) -> Figure:
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    rng = np.random.default_rng(0)  # jitter only
    for k, (err, _) in enumerate(fits.values()):
        errors = np.array([r[err] for r in rows])
        left.plot(k + rng.uniform(-0.18, 0.18, len(errors)), errors, ".", ms=4, color=f"C{k}")
        rms = summary[k]["RMS error of a (mÅ)"]
        left.hlines([-rms, rms], k - 0.3, k + 0.3, color=f"C{k}", lw=2)
    left.axhline(0.0, color="0.3", lw=0.8)
    left.set_xticks(range(len(fits)), list(fits))
    left.set_ylabel("a − a_true (mÅ)")
    left.set_title(f"a over {len(rows)} noise seeds (bars: ± RMS error)")
    x = np.arange(len(summary))
    right.bar(x - 0.2, [s["RMS error of a (mÅ)"] for s in summary], 0.4, label="RMS error")
    right.bar(x + 0.2, [s["mean σ(a) (mÅ)"] for s in summary], 0.4, label="mean stderr")
    right.set_xticks(x, [s["refinement"] for s in summary])
    right.set_ylabel("mÅ")
    right.set_title("error and reported stderr of a")
    right.legend(fontsize=8)
    return fig
