"""The pair HMM against a brute force written from its definition alone.

The brute force in ``test_pair.py`` sums ``PairHMM.path_log_prob`` over every alignment,
so a wrong transition or emission in ``path_log_prob`` would agree with itself. Here the
path probability is Durbin et al.'s (ch. 4) written out: begin behaves like M; M -> X, Y
with delta (each side its own when untied), X -> X, Y -> Y with epsilon, X, Y -> M with
1 - epsilon - tau, M -> M with 1 - delta_x - delta_y - tau, end tau from every state. It
checks scores, Viterbi and one Baum-Welch step (expected counts by enumeration, then the
closed-form M-step) on alphabets of 1 and 5 symbols and empty sides, which the other
tests do not use.
"""

import numpy as np
import pytest
from scipy.special import logsumexp

from tying.hmm import PairHMM

M, X, Y, END = 0, 1, 2, 3


def _alignments(n, m):
    if n == 0 and m == 0:
        yield ()
        return
    if n and m:
        for rest in _alignments(n - 1, m - 1):
            yield (M,) + rest
    if n:
        for rest in _alignments(n - 1, m):
            yield (X,) + rest
    if m:
        for rest in _alignments(n, m - 1):
            yield (Y,) + rest


def _path_log_prob(T, P, qx, qy, x, y, path):
    lp, prev, i, j = 0.0, M, 0, 0
    for k in path:
        with np.errstate(divide="ignore"):  # X -> Y and Y -> X are not allowed: -inf
            lp += np.log(T[prev, k])
        if k == M:
            lp, i, j = lp + np.log(P[x[i], y[j]]), i + 1, j + 1
        elif k == X:
            lp, i = lp + np.log(qx[x[i]]), i + 1
        else:
            lp, j = lp + np.log(qy[y[j]]), j + 1
        prev = k
    return lp + np.log(T[prev, END])


def _enumerate(T, P, qx, qy, pairs):
    """log p of each pair, its best path's log p, and the expected counts."""
    S = len(P)
    trans, match, ins = np.zeros((3, 4)), np.zeros((S, S)), np.zeros((2, S))
    ll, best = [], []
    for x, y in pairs:
        paths = list(_alignments(len(x), len(y)))
        lps = np.array([_path_log_prob(T, P, qx, qy, x, y, p) for p in paths])
        ll.append(logsumexp(lps))
        best.append(lps.max())
        for w, path in zip(np.exp(lps - ll[-1]), paths):
            prev, i, j = M, 0, 0
            for k in path:
                trans[prev, k] += w
                if k == M:
                    match[x[i], y[j]] += w
                    i, j = i + 1, j + 1
                elif k == X:
                    ins[0, x[i]], i = ins[0, x[i]] + w, i + 1
                else:
                    ins[1, y[j]], j = ins[1, y[j]] + w, j + 1
                prev = k
            trans[prev, END] += w
    return np.array(ll), np.array(best), trans, match, ins


@pytest.mark.parametrize("alphabet", ["Z", "ACDEF"])
@pytest.mark.parametrize("tied", [True, False])
def test_scores_viterbi_and_one_em_step_equal_the_definition(alphabet, tied):
    S = len(alphabet)
    rng = np.random.default_rng(S + 10 * tied)
    P = rng.random((S, S))
    P = (P + P.T if tied else P) / (P + P.T if tied else P).sum()
    q = rng.dirichlet(np.ones(S), 2)
    q[1] = q[0] if tied else q[1]
    dx, dy, ex, ey, tau = (0.12, 0.12, 0.4, 0.4, 0.06) if tied else (0.08, 0.17, 0.3, 0.5, 0.06)
    T = np.array(
        [
            [1 - dx - dy - tau, dx, dy, tau],
            [1 - ex - tau, ex, 0.0, tau],
            [1 - ey - tau, 0.0, ey, tau],
        ]
    )
    kw = dict(
        tied=tied,
        delta=dx if tied else (dx, dy),
        epsilon=ex if tied else (ex, ey),
        tau=tau,
        match_probs=P,
        insert_probs=q[0] if tied else q,
    )
    sizes = [(4, 3), (0, 3), (2, 0), (1, 1), (3, 5)]
    pairs = [(rng.integers(0, S, n), rng.integers(0, S, m)) for n, m in sizes]
    text = [("".join(alphabet[v] for v in x), "".join(alphabet[v] for v in y)) for x, y in pairs]
    ll, best, trans, match, ins = _enumerate(T, P, q[0], q[1], pairs)

    model = PairHMM.from_params(alphabet, **kw)
    np.testing.assert_allclose(model.score_pairs(text), ll, rtol=1e-12)
    log_p, paths = model.viterbi(text)
    np.testing.assert_allclose(log_p, best, rtol=1e-12)
    for (x, y), path, b in zip(pairs, paths, best):
        np.testing.assert_allclose(_path_log_prob(T, P, q[0], q[1], x, y, path), b, rtol=1e-12)

    fit = PairHMM(alphabet, n_iter=1, tol=-np.inf, **kw).fit(text)
    np.testing.assert_allclose(fit.history_, [ll.sum()], rtol=1e-12)
    # the M-step maximising Q: tau from the end counts, delta and epsilon as the rest of
    # their rows' mass (1 - tau) split by the counts; tied: X and Y pooled, p symmetric
    tau_ = trans[:, END].sum() / trans.sum()
    from_m = trans[M, :END].sum()
    if tied:
        delta = (trans[M, X] + trans[M, Y]) / (2 * from_m) * (1 - tau_)
        ext, close = trans[X, X] + trans[Y, Y], trans[X, M] + trans[Y, M]
        eps = ext / (ext + close) * (1 - tau_)
        p, ins_ = (match + match.T) / (2 * match.sum()), ins.sum(0) / ins.sum()
    else:
        delta = np.array([trans[M, X], trans[M, Y]]) / from_m * (1 - tau_)
        eps = np.array([trans[k, k] / (trans[k, k] + trans[k, M]) for k in (X, Y)]) * (1 - tau_)
        p, ins_ = match / match.sum(), ins / ins.sum(1, keepdims=True)
    np.testing.assert_allclose(fit.tau_, tau_, rtol=1e-12)
    np.testing.assert_allclose(fit.delta_, delta, rtol=1e-12)
    np.testing.assert_allclose(fit.epsilon_, eps, rtol=1e-12)
    np.testing.assert_allclose(fit.match_probs_, p, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fit.insert_probs_, ins_, rtol=1e-12, atol=1e-15)
