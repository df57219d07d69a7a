"""laplacian_penalty at the user's boundary (stop 58).

Before: complex members with no edges gave a complex zero (the loss turned complex and
backward refused it); ``model.parameters()`` failed in ``len()``; a 0-d bool tensor key
silently named ``params[1]``; ``zip(*edge_index)`` keys (0-d tensors) missed a dict's
int keys; edges as an ``(E, 2)`` tensor, or one pair not wrapped in a list, were told to
"split a longer chain into pairs"; a dict of modules failed in an ``AttributeError``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tying.soft import laplacian_penalty


def _three():
    return [torch.zeros(2), torch.ones(2), torch.full((2,), 3.0)]


def _by_hand(params, edges, lam):
    return lam / 2 * sum(float((params[i] - params[j]).detach().pow(2).sum()) for i, j in edges)


def test_complex_members_without_edges_give_a_real_zero_like_with_edges():
    z = torch.ones(3, dtype=torch.complex64, requires_grad=True)
    with_edge = laplacian_penalty([z, z.detach() * 2], [(0, 1)], lam=1.0)
    none = laplacian_penalty([z, z.detach() * 2], [], lam=1.0)
    assert with_edge.dtype == none.dtype == torch.float32  # was complex64 with no edges
    loss = z.real.sum() + none  # a real loss: backward takes it
    loss.backward()
    assert torch.equal(z.grad, torch.ones(3, dtype=torch.complex64))


def test_params_from_a_generator_such_as_model_parameters_are_taken_in_order():
    layers = [torch.nn.Linear(2, 2, bias=False) for _ in range(3)]
    edges = [(0, 1), (1, 2)]
    want = _by_hand([m.weight.detach() for m in layers], edges, 0.5)
    got = laplacian_penalty((m.weight for m in layers), edges, lam=0.5).detach()
    assert float(got) == pytest.approx(want)  # was TypeError: object of type 'generator'


def test_a_set_of_params_is_refused_its_order_names_no_member():
    with pytest.raises(TypeError, match=r"params is a set, whose order is arbitrary.*pass a list"):
        laplacian_penalty(set(_three()), [(0, 1)], lam=1.0)


def test_a_member_that_is_no_tensor_is_named_with_the_fix():
    mods = {"x": torch.nn.Linear(2, 2), "y": torch.nn.Linear(2, 2)}
    with pytest.raises(
        TypeError, match=r"params\['x'\] is a Linear, not a tensor; .*module\.weight"
    ):
        laplacian_penalty(mods, [("x", "y")], lam=1.0)
    # the fix it names: one penalty per parameter name
    got = laplacian_penalty({k: m.weight for k, m in mods.items()}, [("x", "y")], lam=1.0).detach()
    assert float(got) == pytest.approx(_by_hand([mods["x"].weight, mods["y"].weight], [(0, 1)], 1))


@pytest.mark.parametrize("flag", [torch.tensor(True), np.True_], ids=["tensor", "numpy"])
def test_a_bool_key_of_a_list_is_refused_whatever_its_type(flag):
    # tensor(True) == 1: the penalty of (0, 1), 1.0, came back for the edge (0, True)
    with pytest.raises(ValueError, match=r"names .*True.*not an index of params \(a bool\)"):
        laplacian_penalty(_three(), [(0, flag)], lam=1.0)


def test_zero_d_tensor_keys_from_an_edge_index_name_a_dicts_int_keys():
    params = dict(enumerate(_three()))
    edge_index = torch.tensor([[0, 1], [2, 2]])  # (2, E): edges (0, 2), (1, 2)
    got = laplacian_penalty(params, list(zip(*edge_index)), lam=1.0)
    assert float(got) == pytest.approx(_by_hand(params, [(0, 2), (1, 2)], 1.0))  # 9 + 4


@pytest.mark.parametrize("as_array", [torch.tensor, np.array], ids=["tensor", "numpy"])
def test_edges_as_an_array_are_refused_with_conversions_that_work(as_array):
    ps = _three()
    rows = as_array([[0, 2], [1, 2]])  # (E, 2): edges (0, 2), (1, 2)
    with pytest.raises(
        TypeError, match=r"of shape \(2, 2\); pass edges\.tolist\(\) .*edge_index\.T"
    ):
        laplacian_penalty(ps, rows, lam=1.0)
    want = _by_hand(ps, [(0, 2), (1, 2)], 1.0)
    assert float(laplacian_penalty(ps, rows.tolist(), lam=1.0)) == pytest.approx(want)
    edge_index = as_array([[0, 1], [2, 2]])  # torch_geometric's (2, E) layout, same edges
    assert float(laplacian_penalty(ps, edge_index.T.tolist(), lam=1.0)) == pytest.approx(want)


def test_a_row_of_a_tensor_as_an_edge_names_the_conversion():
    ps = _three()
    with pytest.raises(ValueError, match=r"a Tensor\); give it as a tuple: tuple\(edge.tolist"):
        laplacian_penalty(ps, list(torch.tensor([[0, 2]])), lam=1.0)


def test_one_pair_not_wrapped_in_a_list_is_told_to_wrap_it_and_that_works():
    ps = _three()
    with pytest.raises(ValueError, match=r"for the one edge \(0, 2\) pass \[\(0, 2\)\]"):
        laplacian_penalty(ps, (0, 2), lam=1.0)
    assert float(laplacian_penalty(ps, [(0, 2)], lam=1.0)) == pytest.approx(9.0)
    with pytest.raises(ValueError, match=r"got \(0, 1, 2\); .*a chain \(i, j, k\) is the pairs"):
        laplacian_penalty(ps, [(0, 1, 2)], lam=1.0)
    with pytest.raises(ValueError, match=r"got \(0, 1, 2, 0\); split a longer chain into pairs"):
        laplacian_penalty(ps, [(0, 1, 2, 0)], lam=1.0)


def test_edges_none_is_named():
    with pytest.raises(TypeError, match=r"edges must be an iterable of pairs .*got NoneType"):
        laplacian_penalty(_three(), None, lam=1.0)


def test_a_zero_d_numpy_lam_is_taken_like_a_zero_d_tensor():
    ps = _three()
    got = laplacian_penalty(ps, [(0, 1)], lam=np.array(4.0))
    assert float(got) == float(laplacian_penalty(ps, [(0, 1)], lam=torch.tensor(4.0))) == 4.0
    with pytest.raises(TypeError, match=r"lam must be a real number"):
        laplacian_penalty(ps, [(0, 1)], lam=np.array(True))


def test_a_networkx_graph_given_as_edges_is_refused_its_nodes_are_no_edges():
    nx = pytest.importorskip("networkx")
    grid = nx.grid_2d_graph(2, 2)  # nodes (0, 0), (0, 1), ...: pairs, once read as edges
    ps = [torch.full((1,), float(i)) for i in range(4)]
    with pytest.raises(
        TypeError, match=r"edges is a Graph \(a graph\): .* gives its nodes.*G\.edges"
    ):
        laplacian_penalty(ps, grid, lam=1.0)  # gave 1.0, no error
    index = {n: i for i, n in enumerate(grid)}
    want = _by_hand(ps, [(index[u], index[v]) for u, v in grid.edges], 1.0)
    assert want == 5.0
    by_node = {n: ps[index[n]] for n in grid}
    assert float(laplacian_penalty(by_node, grid.edges, lam=1.0)) == want
    as_list = [(index[u], index[v]) for u, v in grid.edges]
    assert float(laplacian_penalty(ps, as_list, lam=1.0)) == want


def test_a_triple_is_told_apart_from_a_chain_and_the_advice_works():
    nx = pytest.importorskip("networkx")
    ps = _three()
    g = nx.Graph()
    g.add_edge(0, 1, weight=0.5)
    g.add_edge(1, 2, weight=2.0)
    triples = list(g.edges(data="weight"))
    with pytest.raises(ValueError, match=r"got \(0, 1, 0\.5\); a triple is no edge: .*lam \* w"):
        laplacian_penalty(ps, triples, lam=1.0)  # was told to split a chain: (1, 0.5)
    got = sum(laplacian_penalty(ps, [(i, j)], 1.0 * w) for i, j, w in triples)
    assert float(got) == pytest.approx(0.5 * (0.5 * 2 + 2.0 * 8))  # |p1 - p0|² = 2, |p2 - p1|² = 8
    multi = nx.MultiGraph([(0, 1), (0, 1)])
    with pytest.raises(ValueError, match=r"MultiGraph's \(u, v, key\) pass G\.edges\(\)"):
        laplacian_penalty(ps, multi.edges, lam=1.0)
    assert float(laplacian_penalty(ps, multi.edges(), lam=1.0)) == 2.0  # 2 edges × ½ × 2


class _Name:
    """A key that counts the comparisons made with it."""

    compared = 0

    def __init__(self, n):
        self.n = n

    def __hash__(self):
        return hash(self.n)

    def __eq__(self, other):
        _Name.compared += 1
        return isinstance(other, _Name) and other.n == self.n


def test_each_edge_end_is_found_without_scanning_every_key():
    # 3,000 members and 9,000 edges took 1.2 s (the sum by hand: 0.2 s): each end of each
    # edge was looked for in the list of keys, members x edges comparisons
    names = [_Name(n) for n in range(300)]
    params = {k: torch.full((1,), float(k.n)) for k in names}
    edges = [(names[n], names[(n + 1) % 300]) for n in range(300)]
    _Name.compared = 0
    got = laplacian_penalty(params, edges, lam=2.0)
    assert float(got) == 299 * 1.0 + 299.0**2  # 299 unit steps and the wrap-around
    assert _Name.compared <= 4 * len(edges)  # was ~90,000 (a scan per edge end)
