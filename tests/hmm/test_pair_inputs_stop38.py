"""PairHMM settings and symbols at the user boundary (stop 38).

- ``PairHMM("AC", n_symbols=3)``: the alphabet's size won and ``n_symbols`` went unread,
  with no error; a model of 2 symbols scored pairs the caller had declared over 3. The
  two are now refused when they disagree (agreeing ones are taken, as before).
- ``mirror([0, 1, 5])`` returned ``[0, 2, 5]`` (and ``mirror([0.0, 1.5])`` its input): a
  value that is no alignment state went through, with no error. It is refused by entry
  now, as ``path_log_prob`` refuses it.
- An integer symbol given as a uint64 past 2**63 was refused naming the value the cast to
  int64 made of it (a negative number); it names the value given now.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.hmm import PairHMM, mirror
from tying.hmm.pair_dp import M as MATCH
from tying.hmm.pair_dp import X as INS_X
from tying.hmm.pair_dp import Y as INS_Y


def test_an_n_symbols_that_disagrees_with_the_alphabet_is_refused_everywhere():
    with pytest.raises(ValueError, match=r"n_symbols=3 but alphabet 'AC' has 2 symbols"):
        PairHMM.from_params("AC", n_symbols=3)
    m = PairHMM("AC", n_iter=2)
    with pytest.raises(ValueError, match=r"n_symbols=4 but alphabet 'AC' has 2 symbols"):
        m.set_params(n_symbols=4)
    assert m.n_symbols is None  # the refused set_params changed nothing
    with pytest.raises(ValueError, match=r"give one of them \(n_symbols=None with an alphabet\)"):
        PairHMM("ACG", n_symbols=2, n_iter=1).fit([("AC", "AG")])
    agreeing = PairHMM.from_params("AC", n_symbols=2)  # agreeing: taken, the same model
    assert agreeing.score([("AC", "CA")]) == PairHMM.from_params("AC").score([("AC", "CA")])


def test_a_uint64_symbol_past_int64_is_named_as_given():
    m = PairHMM.from_params(n_symbols=3)
    x = np.array([1, 2**63 + 5], dtype=np.uint64)
    with pytest.raises(ValueError, match=r"pair 0, x\[1\] = 9223372036854775813 is not a symbol"):
        m.score_pairs([(x, np.array([1]))])


@pytest.mark.parametrize(
    "states, match",
    [
        ([0, 1, 5], r"states\[2\] = 5 is not a state"),
        ([-1], r"states\[0\] = -1 is not a state"),
        ([0.0, 1.5], r"states must be a 1-d sequence of integer states .* got float64"),
        ([[0, 1]], r"got int64 of shape \(1, 2\)"),
    ],
)
def test_mirror_refuses_what_is_no_state_path(states, match):
    with pytest.raises(ValueError, match=match):
        mirror(states)


def _alignments(n, m):
    if n == 0 and m == 0:
        yield []
        return
    if n and m:
        yield from ([MATCH] + r for r in _alignments(n - 1, m - 1))
    if n:
        yield from ([INS_X] + r for r in _alignments(n - 1, m))
    if m:
        yield from ([INS_Y] + r for r in _alignments(n, m - 1))


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    alphabet=st.sampled_from(["AC", "ACG", "ACGT"]),
    n_symbols=st.sampled_from([None, 2, 3, 4]),
    x=st.text("ACGT", max_size=3),
    y=st.text("ACGT", max_size=3),
)
def test_property_a_model_is_built_only_for_the_alphabet_it_was_declared_with(
    alphabet, n_symbols, x, y
):
    """Accepted exactly when ``n_symbols`` is None or the alphabet's size; an accepted
    model scores (x, y) as the sum over every alignment (brute force) does, over the
    symbols of ``alphabet``."""
    if n_symbols is not None and n_symbols != len(alphabet):
        with pytest.raises(ValueError, match=rf"n_symbols={n_symbols} but alphabet"):
            PairHMM.from_params(alphabet, n_symbols=n_symbols)
        return
    m = PairHMM.from_params(alphabet, n_symbols=n_symbols, delta=0.1, epsilon=0.3, tau=0.05)
    assert m.match_probs_.shape == (len(alphabet), len(alphabet))
    if any(c not in alphabet for c in x + y):
        with pytest.raises(ValueError, match=r"is not in the alphabet"):
            m.score_pairs([(x, y)])
        return
    paths = list(_alignments(len(x), len(y)))
    brute = np.logaddexp.reduce([m.path_log_prob(x, y, p) for p in paths])
    np.testing.assert_allclose(m.score_pairs([(x, y)])[0], brute, rtol=1e-12)


@settings(derandomize=True, deadline=None, max_examples=30)
@given(x=st.text("AC", max_size=3), y=st.text("AC", max_size=3), junk=st.integers(3, 9))
def test_property_mirror_swaps_every_alignment_or_refuses(x, y, junk):
    """Every alignment of (x, y), mirrored, is an alignment of (y, x) with the same
    log-probability under the tied model (brute force over all of them), mirror is its
    own inverse; a path holding a value that is no state is refused."""
    m = PairHMM.from_params("AC", delta=0.1, epsilon=0.3, tau=0.05)
    for path in _alignments(len(x), len(y)):
        swapped = mirror(path)
        assert mirror(swapped).tolist() == path
        assert m.path_log_prob(y, x, swapped) == pytest.approx(
            m.path_log_prob(x, y, path), rel=1e-12
        )
        with pytest.raises(ValueError, match=rf"= {junk} is not a state"):
            mirror(path + [junk])
