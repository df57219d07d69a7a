"""Viterbi ``decode`` against hmmlearn, in one run (stop 60).

Before stop 60 ``decode`` ran a NumPy loop over the steps of the longest sequence,
about 40 us a step: one sequence of 200,000 rows (K=4, D=2) took 8-10 s where
hmmlearn's log implementation takes 0.17 s. Sequences of at least
``viterbi.COMPILED_MIN_ROWS`` rows now run a compiled kernel with the loop's bits.

Rows: ours / hmmlearn ``implementation="log"`` (its Viterbi is the same in both of its
implementations), CPU time of one process, interleaved pairs, BLAS held to one thread;
each row also says whether the paths are equal and how far the log-probabilities are
apart (relative). The shapes: one long sequence, a few long ones, and the issue's EM
shape (many short ones, which stay on the NumPy loop below the threshold).

Run: ``PYTHONPATH=$PWD/src:$PWD python -m benchmarks hmm_decode``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.common import SMOKE, load_average, pairs, smoke, write

#: (states, features, sequences, rows per sequence)
SHAPES = ((4, 2, 1, 200_000), (8, 4, 4, 20_000), (8, 4, 150, 400))


def _model(K, D, seed=0):
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K) * 0.5, size=K) + np.eye(K) * 4
    A /= A.sum(1, keepdims=True)
    means = rng.normal(scale=3.0, size=(K, D))
    covars = rng.uniform(0.5, 2.0, size=(K, D))
    return start, A, means, covars


def _case(K, D, n_seq, T):
    from hmmlearn import hmm as hl

    from tying.hmm import GaussianHMM

    start, A, means, covars = _model(K, D)
    truth = hl.GaussianHMM(K, "diag", init_params="", params="")
    truth.startprob_, truth.transmat_, truth.means_, truth.covars_ = start, A, means, covars
    X, _ = truth.sample(n_seq * T, random_state=1)
    lengths = [T] * n_seq
    anchor = hl.GaussianHMM(K, "diag", implementation="log", init_params="", params="")
    anchor.startprob_, anchor.transmat_, anchor.means_, anchor.covars_ = start, A, means, covars
    ours = GaussianHMM(K, "diag", init_params="", params="")
    ours.startprob_, ours.transmat_, ours.means_, ours.covars_ = start, A, means, covars
    lp_o, path_o = ours.decode(X, lengths)  # warms the compiled kernel up
    lp_a, path_a = anchor.decode(X, lengths)
    t_o, t_a, ratios = pairs(
        lambda: ours.decode(X, lengths),
        lambda: anchor.decode(X, lengths),
        repeat=smoke(7, 1),
        warmup=smoke(1, 0),
        clock=time.process_time,
    )
    return {
        "case": f"decode, K={K}, D={D}, {n_seq} x {T} rows",
        "anchor": "hmmlearn GaussianHMM.decode (viterbi, implementation='log')",
        "ours_ms": t_o * 1e3,
        "anchor_ms": t_a * 1e3,
        "speedup": statistics.median(ratios),
        "speedup_spread": f"{min(ratios):.2f}-{max(ratios):.2f}",
        "same_path": bool(np.array_equal(path_o, path_a)),
        "logprob_rel_diff": abs(lp_o - lp_a) / abs(lp_a),
        "load": " ".join(load_average()),
    }


def main() -> None:
    import threadpoolctl

    shapes = ((4, 2, 1, 3000), (8, 4, 150, 40)) if SMOKE else SHAPES
    with threadpoolctl.threadpool_limits(1):
        rows = [_case(*shape) for shape in shapes]
    write("hmm_decode", rows)


if __name__ == "__main__":
    main()
