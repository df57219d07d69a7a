"""laplacian_penalty refuses edges given as a mapping (stop 56).

``{(0, 1): 10.0, (1, 2): 0.0}`` (weighted edges) was iterated for its keys, so every
weight was dropped and the penalty came back unweighted, with no error.
"""

from __future__ import annotations

import pytest
import torch

import tying


def _params():
    return [torch.zeros(2), torch.ones(2), 3 * torch.ones(2)]


@pytest.mark.parametrize(
    "edges", [{(0, 1): 10.0, (1, 2): 0.0}, {(0, 1): 1.0}], ids=["weighted", "unit-weights"]
)
def test_edges_given_as_a_mapping_are_refused_naming_the_fix(edges):
    with pytest.raises(TypeError, match=r"edges must be pairs .* got a dict .* would be ignored"):
        tying.soft.laplacian_penalty(_params(), edges, lam=1.0)


def test_the_fix_the_message_names_gives_the_weighted_penalty():
    ps, weights = _params(), {(0, 1): 10.0, (1, 2): 0.5}
    got = sum(tying.soft.laplacian_penalty(ps, [e], 2.0 * w) for e, w in weights.items())
    # brute force: lam/2 * sum_e w_e ||p_i - p_j||^2
    want = 1.0 * sum(w * float((ps[i] - ps[j]).pow(2).sum()) for (i, j), w in weights.items())
    assert float(got) == pytest.approx(want)
    unweighted = tying.soft.laplacian_penalty(ps, list(weights), lam=2.0)
    assert float(unweighted) == pytest.approx(
        sum(float((ps[i] - ps[j]).pow(2).sum()) for i, j in weights)
    )
