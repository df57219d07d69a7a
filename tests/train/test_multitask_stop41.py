"""The task graph's edges, however they are handed over (stop 41).

``fit_multitask(edges=<generator>)`` checked the edges by iterating them, so the penalty
then read an exhausted generator at every step: λ was ignored and the tasks were fitted
apart (trunk spread 1.117, the λ = 0 figure, where the list of the same edges gives
0.011), with no error. ``soft_penalty`` iterated the edges once per trunk parameter, so a
generator penalised the first parameter only (6.0 of a penalty of 6.5 below). A bool task
``(0, True)`` was read as task 1, and a float task ``1.0`` failed inside the union-find
with "list indices must be integers", naming no edge.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.train import MultiTaskNet, components, fit_multitask


def _net(n_tasks=3, seed=0, spread=True):
    torch.manual_seed(seed)
    net = MultiTaskNet(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1), n_tasks=n_tasks)
    if spread:  # trunks apart, so that every edge has a penalty
        with torch.no_grad():
            for k, t in enumerate(net.trunks):
                t.weight.add_(k)
                t.bias.add_(0.5 * k)
    return net


def _brute_penalty(net, edges, lam):
    """λ/2 Σ_edges Σ_params ‖θ_i − θ_j‖², from the trunks' parameters directly."""
    total = 0.0
    for i, j in edges:
        a, b = dict(net.trunks[i].named_parameters()), dict(net.trunks[j].named_parameters())
        total += sum(float((a[n] - b[n]).detach().pow(2).sum()) for n in a)
    return lam / 2 * total


def test_soft_penalty_reads_a_generator_of_edges_for_every_parameter():
    net, edges = _net(), [(0, 1), (1, 2)]
    want = _brute_penalty(net, edges, 1.0)
    assert net.soft_penalty(edges, 1.0).item() == pytest.approx(want)
    # was 6.0, the weights' part alone
    assert net.soft_penalty((e for e in edges), 1.0).item() == pytest.approx(want)
    assert want == pytest.approx(2 * (6 * 1.0**2 + 2 * 0.5**2) / 2)  # by hand: 6.5


def test_fit_multitask_applies_the_penalty_for_a_generator_of_edges():
    X = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
    data = [(X, (k + 1) * X.sum(1, keepdim=True)) for k in range(3)]
    edges = [(0, 1), (1, 2)]

    def spread(e, lam=100.0):
        net = _net(spread=False, seed=1)
        fit_multitask(net, data, edges=e, lam=lam, steps=60)
        return sum(
            float((net.trunks[i].weight - net.trunks[j].weight).detach().norm()) for i, j in edges
        )

    as_list, as_gen, apart = spread(edges), spread(e for e in edges), spread((), lam=0.0)
    assert as_gen == as_list  # was the λ = 0 figure
    assert as_list < 0.1 * apart


@pytest.mark.parametrize(
    "edges, error, match",
    [
        ([(0, True)], TypeError, r"edge \(0, True\) names task True \(bool\); tasks must be ints"),
        ([(0.0, 1.0)], TypeError, r"edge \(0\.0, 1\.0\) names task 0\.0 \(float\)"),
        (np.array([[0.0, 1.0]]), TypeError, r"names task .*float64"),
        ([(0, 1, 2)], ValueError, r"edge \(0, 1, 2\) has 3 entries, expected a \(task, task\)"),
        ([0, 1], ValueError, r"edge 0 is not a \(task, task\) pair"),
        ("01", TypeError, r"edges must be a list of \(task, task\) pairs, got '01'"),
        ([(-1, 0)], ValueError, r"edge \(-1, 0\) names task -1, expected 0 <= task < 3"),
    ],
)
def test_a_task_that_is_not_an_int_is_refused_naming_the_edge(edges, error, match):
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(error, match=match):
        components(3, edges)
    with pytest.raises(error, match=match):
        net.soft_penalty(edges, 1.0)
    X = torch.randn(4, 3)
    with pytest.raises(error, match=match):
        fit_multitask(net, [(X, X[:, :1])] * 3, edges=edges, lam=1.0, steps=2)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_numpy_integer_edges_and_task_counts_are_accepted():
    assert components(np.int64(3), np.array([[0, 1]])) == [[0, 1], [2]]
    assert components(3, torch.tensor([[1, 2]])) == [[0], [1, 2]]  # as before: 0-d int tensors
    net = MultiTaskNet(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1), n_tasks=np.int64(2))
    assert net.n_tasks == 2


@pytest.mark.parametrize("n_tasks", [True, 2.0])
def test_a_task_count_that_is_not_an_int_is_refused(n_tasks):
    with pytest.raises(TypeError, match=r"MultiTaskNet: n_tasks must be an int >= 1, got"):
        MultiTaskNet(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1), n_tasks=n_tasks)
    with pytest.raises(TypeError, match=r"components: n_tasks must be an int >= 1, got"):
        components(n_tasks, [])


_FORMS = {
    "list": list,
    "tuple": tuple,
    "generator": lambda es: (e for e in es),
    "numpy": lambda es: np.array(es, dtype=np.int64).reshape(-1, 2),
    "map": lambda es: map(tuple, es),
    "torch": lambda es: torch.tensor(es, dtype=torch.long).reshape(-1, 2),
}


@settings(derandomize=True, deadline=None, max_examples=25)
@given(
    edges=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=6),
    form=st.sampled_from(sorted(_FORMS)),
    lam=st.floats(0.0, 10.0),
)
def test_property_the_penalty_and_components_do_not_depend_on_how_edges_are_handed_over(
    edges, form, lam
):
    net = _net(n_tasks=4)
    got = net.soft_penalty(_FORMS[form](edges), lam, undirected=False).item()  # as listed
    assert got == pytest.approx(_brute_penalty(net, edges, lam), rel=1e-6, abs=1e-9)
    assert components(4, _FORMS[form](edges)) == components(4, list(edges))
