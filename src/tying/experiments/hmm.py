"""HMM experiments: tied emissions pool Baum-Welch statistics (C3); a tied pair HMM is symmetric (C4).

- C3 ``hmm-tied-emissions`` (seeds 000-002): states that behave alike (three
  sub-states of one phone, say) share one emission distribution. Baum-Welch then
  estimates it from the pooled statistics of all its states, so at small data
  the shared means are recovered with lower error than by an untied fit; the
  transition update is untouched (from the same parameters one EM step gives
  the same transition matrix, tied or not), and EM never lowers the likelihood.
- C4 ``pair-hmm-symmetry`` (seed 001): with insert-X and insert-Y tied (one gap
  open, one gap extend, one insert distribution, a symmetric match table) a
  pair HMM cannot tell which sequence is called x: log p(x, y) = log p(y, x) to
  the last bit, Viterbi alignments mirror, and Baum-Welch learns the same
  parameters whichever way the pairs are labelled. The untied model is the control.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np
from matplotlib.figure import Figure

from tying.experiments.common import largest, smallest
from tying.experiments.registry import Result, Table, check_size, experiment
from tying.hmm import ConvergenceWarning, GaussianHMM, PairHMM, mirror
from tying.report.format import format_number

log = logging.getLogger("tying.experiments")

# ---------------------------------------------------------------------------- C3


@dataclasses.dataclass(frozen=True)
class TiedEmissionConfig:
    steps: tuple[int, ...] = (100, 200, 400, 800, 1600, 3200)  # training-set sizes (time steps)
    seq_len: int = 50  # many short sequences: exercises the batched E-step
    replicates: int = 12  # independent data sets per size, for error bars
    # EM iterations, a cap: fits stop at tol (stop 35: a cap of 60 stopped 140 of 144 report
    # fits short of tol, still gaining; 2,000 lets all but about 1 in 15 converge, whose
    # count the result reports; the verdict and ratio were the same with either cap)
    n_iter: int = 2000
    tol: float = 1e-7
    init_noise: float = 0.6  # start means = truth + this much noise (same start for both fits)
    small: int = 2  # the claim is checked on the smallest `small` sizes


TIED_EMISSION = {
    "quick": TiedEmissionConfig(steps=(100, 200, 800), replicates=5),
    "report": TiedEmissionConfig(),
}

# Six states in a cycle 0 -> 1 -> ... -> 5 -> 0. States 0, 1, 2 are three
# sub-states of one "phone" and emit alike; 3 and 4 likewise; 5 is on its own.
_GROUPS = [[0, 1, 2], [3, 4], [5]]
_GROUP_MEANS = np.array([[0.0, 0.0], [1.6, 0.4], [0.3, 1.7]])
_SELF = np.array([0.75, 0.6, 0.8, 0.7, 0.65, 0.85])


def _truth():
    K = 6
    A = np.zeros((K, K))
    for k in range(K):
        A[k, k] = _SELF[k]
        A[k, (k + 1) % K] = 1 - _SELF[k]
    means = np.zeros((K, 2))
    for g, states in enumerate(_GROUPS):
        means[states] = _GROUP_MEANS[g]
    return np.full(K, 1 / K), A, means, np.full((K, 2), 0.5)


def _sample(rng, n_seq, seq_len, truth):
    start, A, means, var = truth
    model = GaussianHMM.from_params(start, A, means, var)
    seeds = rng.integers(0, 2**63 - 1, size=n_seq)
    X = np.concatenate([model.sample(seq_len, random_state=int(s))[0] for s in seeds])
    return X, np.full(n_seq, seq_len)


def _start(rng, truth, noise):
    """One starting point that satisfies the ties, shared by the tied and untied fits."""
    _, A, means, _ = truth
    group_means = _GROUP_MEANS + noise * rng.normal(size=_GROUP_MEANS.shape)
    m0 = np.zeros_like(means)
    for g, states in enumerate(_GROUPS):
        m0[states] = group_means[g]
    A0 = 0.7 * A + 0.3 * rng.dirichlet(np.ones(6), size=6)
    return {
        "startprob_init": np.full(6, 1 / 6),
        "transmat_init": A0,
        "means_init": m0,
        "covars_init": np.ones((6, 2)),
    }


def _monotone(history) -> float:
    """Most negative step of an EM history, relative to its size (>= -1e-9: never decreases)."""
    h = np.asarray(history)
    if len(h) < 2:
        return 0.0
    return float((np.diff(h) / np.abs(h[1:])).min())


@experiment("hmm-tied-emissions")
def hmm_tied_emissions(size: str, seed: int) -> Result:
    check_size(size)
    cfg = TIED_EMISSION[size]
    rng = np.random.default_rng(seed)
    truth = _truth()
    ties = {"means": _GROUPS, "covars": _GROUPS}
    err = {"tied": {}, "untied": {}}
    terr = {"tied": {}, "untied": {}}
    worst_step, one_step_dA = 0.0, 0.0
    at_budget, n_fits = 0, 0  # fits that stopped at the n_iter cap, still gaining over tol
    for n in cfg.steps:
        for key in err:
            err[key][n], terr[key][n] = [], []
        for _ in range(cfg.replicates):
            X, lengths = _sample(rng, max(1, n // cfg.seq_len), cfg.seq_len, truth)
            start = _start(rng, truth, cfg.init_noise)
            fits = {
                "tied": GaussianHMM(6, ties=ties, n_iter=cfg.n_iter, tol=cfg.tol, **start),
                "untied": GaussianHMM(6, n_iter=cfg.n_iter, tol=cfg.tol, **start),
            }
            for key, model in fits.items():
                with warnings.catch_warnings():  # counted and reported below instead
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.fit(X, lengths)
                at_budget += bool(model.monitor_.hit_budget)
                n_fits += 1
                worst_step = smallest([worst_step, _monotone(model.history_)])
                err[key][n].append(float(np.sqrt(((model.means_ - truth[2]) ** 2).sum(1).mean())))
                terr[key][n].append(float(np.abs(model.transmat_ - truth[1]).mean()))
            # the transition update does not see the tie: one EM step from the same
            # parameters gives the same transition matrix, tied or untied
            one = {
                k: GaussianHMM(6, ties=t, n_iter=1, tol=-np.inf, **start).fit(X, lengths)
                for k, t in (("tied", ties), ("untied", None))
            }
            one_step_dA = largest(
                [one_step_dA, float(np.abs(one["tied"].transmat_ - one["untied"].transmat_).max())]
            )
        log.info(
            "C3 n=%d tied %.3f untied %.3f", n, np.mean(err["tied"][n]), np.mean(err["untied"][n])
        )

    rows = []
    for n in cfg.steps:
        t, u = float(np.mean(err["tied"][n])), float(np.mean(err["untied"][n]))
        rows.append(
            {
                "time steps": n,
                "mean error tied": t,
                "mean error untied": u,
                "untied / tied": u / t,
                "transition error tied": float(np.mean(terr["tied"][n])),
                "transition error untied": float(np.mean(terr["untied"][n])),
            }
        )
    small = cfg.steps[: cfg.small]
    ratio_small = float(
        np.mean([np.mean(err["untied"][n]) / np.mean(err["tied"][n]) for n in small])
    )
    tied_better = all(np.mean(err["tied"][n]) < np.mean(err["untied"][n]) for n in small)
    passed = tied_better and worst_step >= -1e-9 and one_step_dA <= 1e-10
    measured = {
        "untied/tied mean error at small data": ratio_small,
        "tied better at every small size": tied_better,
        "worst relative EM step (>= -1e-9)": worst_step,
        "max |ΔA| after one EM step, tied vs untied": one_step_dA,
        "fits stopped at the n_iter cap before tol": f"{at_budget} of {n_fits}",
    }
    return Result(
        tables=[
            Table("Recovery of the state means and transitions (averages over replicates)", rows)
        ],
        figures={"tied_emissions": _c3_figure(cfg, err, terr)},
        passed=bool(passed),
        measured=measured,
        key_figure=f"untied/tied mean error {format_number(ratio_small)}x at ≤{small[-1]} steps; EM monotone",
        notes=(
            "Six states in a cycle; states {0,1,2} and {3,4} emit alike. Both fits start from the "
            "same parameters (which satisfy the tie) and differ only in the tie spec. Mean error "
            "is the RMS distance of the 6 estimated state means to the truth. The transition "
            "update is the same formula in both: from identical parameters one EM step gives "
            "identical transition matrices; over a whole fit the tied model's transitions end up "
            "better too, because its posteriors are. EM runs to a gain below tol="
            f"{cfg.tol:g}, capped at {cfg.n_iter} iterations: {at_budget} of {n_fits} fits "
            "reached the cap (slow EM on flat likelihoods of small data sets); their "
            "estimates are included as they stand."
        ),
    )


def _c3_figure(cfg, err, terr) -> Figure:
    fig = Figure(figsize=(9.2, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    steps = np.array(cfg.steps)
    for key, color in (("untied", "tab:red"), ("tied", "tab:blue")):
        m = np.array([np.mean(err[key][n]) for n in steps])
        s = np.array([np.std(err[key][n]) / np.sqrt(len(err[key][n])) for n in steps])
        ax1.errorbar(steps, m, yerr=s, marker="o", color=color, capsize=3, label=key)
        tm = np.array([np.mean(terr[key][n]) for n in steps])
        ax2.plot(steps, tm, marker="o", color=color, label=key)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training time steps")
        ax.legend()
    ax1.set_ylabel("RMS error of state means")
    ax1.set_title("Emissions: tying pools the evidence")
    ax2.set_ylabel("mean |Â − A|")
    ax2.set_title("Transitions: same update, better posteriors")
    return fig


# ---------------------------------------------------------------------------- C4


@dataclasses.dataclass(frozen=True)
class PairSymmetryConfig:
    n_pairs: int = 120  # training pairs for Baum-Welch
    n_test: int = 200  # held-out pairs for the symmetry checks
    n_iter: int = 15  # Baum-Welch iterations
    tau: float = 0.02  # end probability of the generating model: mean length ≈ 1/tau
    delta: float = 0.06
    epsilon: float = 0.4


PAIR_SYMMETRY = {
    "quick": PairSymmetryConfig(n_pairs=30, n_test=40, n_iter=5, tau=0.05),
    "report": PairSymmetryConfig(),
}


def _generator(cfg: PairSymmetryConfig) -> PairHMM:
    p = np.full((4, 4), 0.04 / 12)
    np.fill_diagonal(p, 0.96 / 4)  # 96 % identity: closely related sequences
    return PairHMM.from_params(
        "ACGT", delta=cfg.delta, epsilon=cfg.epsilon, tau=cfg.tau, match_probs=p / p.sum()
    )


@experiment("pair-hmm-symmetry")
def pair_hmm_symmetry(size: str, seed: int) -> Result:
    check_size(size)
    cfg = PAIR_SYMMETRY[size]
    gen = _generator(cfg)
    train, _ = gen.sample(cfg.n_pairs, random_state=seed)
    test, _ = gen.sample(cfg.n_test, random_state=seed + 1)
    test = [(x, y) for x, y in test if x and y]
    swapped = [(y, x) for x, y in test]
    train_swapped = [(y, x) for x, y in train]

    models, params = {}, []
    for tied in (True, False):
        for label, data in (("as given", train), ("x, y swapped", train_swapped)):
            m = PairHMM("ACGT", tied=tied, n_iter=cfg.n_iter, tol=-np.inf).fit(data)
            models[(tied, label)] = m
            params.append(
                {
                    "model": "tied" if tied else "untied",
                    "training pairs": label,
                    "delta": np.asarray(m.delta_).tolist(),
                    "epsilon": np.asarray(m.epsilon_).tolist(),
                    "tau": m.tau_,
                    "EM log-lik gain": m.history_[-1] - m.history_[0],
                }
            )
    tied, untied = models[(True, "as given")], models[(False, "as given")]
    ll = {
        k: (m.score_pairs(test), m.score_pairs(swapped))
        for k, m in (("tied", tied), ("untied", untied))
    }
    diff = {k: np.abs(a - b) for k, (a, b) in ll.items()}
    rel = {k: float((d / np.abs(ll[k][0])).max()) for k, d in diff.items()}

    # Viterbi: the swapped pair's best alignment is the mirror image
    lp, paths = tied.viterbi(test)
    lp_sw, paths_sw = tied.viterbi(swapped)
    mirrored = np.mean([np.array_equal(mirror(a), b) for a, b in zip(paths, paths_sw)])
    mirror_scores = largest(
        abs(tied.path_log_prob(y, x, mirror(a)) - v) / abs(v)
        for (x, y), a, v in zip(test, paths, lp_sw)
    )
    same_fit = largest(
        abs(getattr(models[(True, "as given")], a) - getattr(models[(True, "x, y swapped")], a))
        for a in ("delta_", "epsilon_", "tau_")
    )
    same_fit = largest(
        [
            same_fit,
            float(
                np.abs(
                    models[(True, "as given")].match_probs_
                    - models[(True, "x, y swapped")].match_probs_
                ).max()
            ),
        ]
    )
    passed = (
        rel["tied"] <= 1e-12
        and mirror_scores <= 1e-12
        and rel["untied"] > 1e-6
        and same_fit <= 1e-9
    )
    measured = {
        "max |Δ log p| / |log p|, tied": rel["tied"],
        "max |Δ log p| / |log p|, untied (control)": rel["untied"],
        "Viterbi: swapped pair's best path is the mirror (fraction identical)": float(mirrored),
        "Viterbi: mirrored path scores the best for (y, x), max rel. gap": float(mirror_scores),
        "tied fit, labels swapped: max parameter change": float(same_fit),
    }
    sym = [
        {
            "model": k,
            "pairs": len(test),
            "max |log p(x,y) − log p(y,x)|": float(d.max()),
            "mean |…|": float(d.mean()),
        }
        for k, d in diff.items()
    ]
    return Result(
        tables=[
            Table("Symmetry of the forward log-likelihood on held-out pairs", sym),
            Table("Baum-Welch estimates, training pairs as given and swapped", params),
        ],
        figures={"pair_symmetry": _c4_figure(ll, tied, test)},
        passed=bool(passed),
        measured=measured,
        key_figure=f"tied: max |Δ log p| = {format_number(diff['tied'].max())}; untied: {format_number(diff['untied'].max())}",
        notes=(
            "Both models are fitted by Baum-Welch on the same unaligned pairs, drawn from a "
            "symmetric generator. The tied model keeps one gap open/extend, one insert "
            "distribution and a symmetric match table; the untied one estimates X and Y apart, "
            "so noise makes it prefer one labelling. Where two alignments score exactly the "
            "same, Viterbi's tie-break may pick a non-mirrored one; the mirrored path still "
            "scores the best, which is what the check asks."
        ),
    )


def _c4_figure(ll, tied: PairHMM, test) -> Figure:
    fig = Figure(figsize=(9.6, 3.8), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.3, 1, 1]})
    for key, color, mark in (("untied", "tab:red", "x"), ("tied", "tab:blue", "o")):
        a, b = ll[key]
        ax1.scatter(a, b - a, s=14, marker=mark, color=color, label=key, alpha=0.8)
    ax1.axhline(0, color="k", lw=0.6)
    ax1.set_xlabel("log p(x, y)")
    ax1.set_ylabel("log p(y, x) − log p(x, y)")
    ax1.set_title("Swapping x and y")
    ax1.legend()
    x, y = max(test, key=lambda p: min(len(p[0]), len(p[1])) if len(p[0]) < 80 else 0)
    post = tied.match_posteriors(x, y)
    post_sw = tied.match_posteriors(y, x)
    ax2.imshow(post, cmap="Blues", vmin=0, vmax=1, origin="upper")
    ax2.set_title("P(x_i ◇ y_j), tied")
    ax2.set_xlabel("j (y)")
    ax2.set_ylabel("i (x)")
    ax3.imshow(post_sw.T, cmap="Blues", vmin=0, vmax=1, origin="upper")
    ax3.set_title(
        f"same from (y, x), transposed\nmax diff {format_number(np.abs(post - post_sw.T).max())}"
    )
    ax3.set_xlabel("j (y)")
    return fig
