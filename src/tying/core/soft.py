"""Soft ties: a penalty that pulls parameters together instead of making them one (claim C6).

``laplacian_penalty`` is ``lam/2 · Σ_(i,j)∈E ‖θ_i − θ_j‖²`` over the edges of a
graph (a task graph for multi-task learning): λ → ∞ is hard sharing along the
graph's connected components, λ = 0 independent parameters.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet

import numpy as np
import torch

_HALF = (torch.float16, torch.bfloat16)
_FLOAT_MAX = float(np.finfo(np.float64).max)


def laplacian_penalty(
    params: Sequence[torch.Tensor] | Mapping[object, torch.Tensor],
    edges: Iterable[tuple[object, object]],
    lam: float,
    *,
    undirected: bool | None = None,
) -> torch.Tensor:
    """``lam/2 · Σ_(i,j)∈edges ‖params[i] − params[j]‖²``.

    Args:
        params: tensors of one shape, as a list (edges index it) or a mapping
            (``nn.ParameterDict`` too); any other ordered iterable (``model.parameters()``)
            is listed once and indexed like a list.
        edges: pairs of keys of ``params`` (a 0-d integer tensor counts as its int).
        lam: the penalty strength (≥ 0): a number, a 0-d real tensor or NumPy array.
        undirected: how an edge given in both directions counts. ``None`` (default):
            refused, since ``(i, j)`` and ``(j, i)`` would count twice (torch_geometric
            stores an undirected graph's every edge both ways: the penalty would double).
            ``True``: each unordered pair counts once, however often and whichever way
            it is listed. ``False``: every listed edge counts (a directed graph's
            mutual edges, twice).

    Returns:
        A scalar tensor (differentiable).

    Raises:
        TypeError: ``lam`` not a real number (a bool, a string, None, a tensor that is not
            0-d, or a bool or complex one), a member that is not floating-point or
            complex, or ``edges`` given as a mapping (``{(i, j): weight}``: its weights
            would be ignored), ``edges`` given as a tensor or array (``edges.tolist()``,
            or ``edge_index.T.tolist()`` for torch_geometric's ``(2, E)`` layout) or not
            iterable, or a networkx graph (it iterates its nodes: pass ``G.edges``);
            ``params`` given as a set (unordered), as ``(name, tensor)`` pairs
            (``model.named_parameters()``: pass ``dict(...)``), or a member that is not a
            tensor; ``undirected`` not a bool or None.
        ValueError: negative, NaN or infinite ``lam``, an edge that is not a pair or names
            a missing key (a bool, NumPy's or a tensor's too, is no index of a list), or shapes
            that differ, or an edge given both ways with ``undirected=None``.

    Complex members count ``|a − b|²`` (real and ≥ 0). float16 and bfloat16 members
    are squared and summed in float32 and the penalty rounded once to their dtype (it
    is inf only when the penalty itself does not fit). With no edges the penalty is a
    zero of the dtype it has with edges (real for complex members).

    Example:
        >>> import torch, tying
        >>> a, b = torch.zeros(2), torch.ones(2)
        >>> tying.soft.laplacian_penalty([a, b], [(0, 1)], lam=2.0)
        tensor(2.)
        >>> tying.soft.laplacian_penalty([a, b], [(0, 1), (1, 0)], lam=2.0, undirected=True)
        tensor(2.)
    """
    if isinstance(lam, np.ndarray) and lam.ndim == 0 and lam.dtype.kind in "fiu":
        lam = lam.item()  # np.array(0.1), a 0-d array, as a 0-d tensor is taken (stop 58)
    if isinstance(lam, bool) or not isinstance(lam, (numbers.Real, torch.Tensor)):
        # True was taken as 1 and a string failed inside a comparison (stop 32)
        raise TypeError(
            f"laplacian_penalty: lam must be a real number (float, int or a 0-d tensor), got "
            f"{type(lam).__name__} {lam!r}"
        )
    if isinstance(lam, torch.Tensor) and (
        lam.dtype == torch.bool or lam.is_complex() or lam.ndim != 0
    ):
        # stop 41: tensor(True) was taken as 1 (a Python True is refused), a (1,)-shaped lam
        # made the penalty (1,)-shaped, not a scalar, and a complex or longer one failed in
        # torch's words, naming no argument
        raise TypeError(
            f"laplacian_penalty: lam must be a real number (float, int or a 0-d real tensor), "
            f"got a tensor of shape {tuple(lam.shape)} and dtype {lam.dtype}; pass a float "
            f"(lam.item() for a one-element tensor)"
        )
    if not (lam >= 0) or lam == float("inf"):  # NaN fails every comparison
        raise ValueError(f"laplacian_penalty: lam must be finite and >= 0, got {lam}")
    if isinstance(lam, numbers.Integral) and lam > _FLOAT_MAX:
        # stop 62: 10**400 failed later in float()'s OverflowError, naming no argument
        raise ValueError(
            f"laplacian_penalty: lam must be finite and >= 0, got an int of {len(str(lam))} "
            f"digits, past the largest float ({_FLOAT_MAX:.3g}); pass a smaller lam"
        )
    if undirected is not None and not isinstance(undirected, bool):
        raise TypeError(
            f"laplacian_penalty: undirected must be True, False or None, got "
            f"{type(undirected).__name__} {undirected!r}"
        )
    # an edge view whose values carry nothing (networkx's G.edges of a graph without edge
    # attributes: {(0, 1): {}}) is a list of pairs; values that do (a weight) are refused
    if isinstance(edges, Mapping) and any(
        v is not None and not (isinstance(v, Mapping) and not v) for v in edges.values()
    ):
        # stop 56: {(0, 1): 10.0} (edge weights) iterated its keys, so every weight was
        # dropped without a word: the penalty came back unweighted
        raise TypeError(
            f"laplacian_penalty: edges must be pairs (i, j) of keys of params, got a "
            f"{type(edges).__name__} ({list(edges.items())[:3]!r}...): its values (edge "
            f"weights?) would be ignored; pass list(edges) for unweighted edges, or sum one "
            f"penalty per weight: sum(laplacian_penalty(params, [e], lam * w) for e, w in "
            f"edges.items())"
        )
    _check_edges_container(edges)
    mapping, keys, get = _members(params)
    # stop 58: a key was looked up in the list of keys, once per edge end: 1.2 s for
    # 3,000 members and 9,000 edges (the sum itself: 0.2 s), growing as members x edges
    known = set(keys)
    total = None
    out = None  # the dtype of the penalty: the members' (real) dtype, promoted
    seen: set = set()  # the (i, j) pairs summed so far, as given
    for edge in edges:
        if isinstance(edge, (torch.Tensor, np.ndarray)):
            # stop 58: a row of an (E, 2) tensor was refused as "not a pair", with advice
            # to split a chain that was no chain
            raise ValueError(
                f"laplacian_penalty: each edge must be a pair (i, j) of keys of params, got "
                f"{edge!r} (a {type(edge).__name__}); give it as a tuple: tuple(edge.tolist())"
            )
        if isinstance(edge, (str, bytes)) or not isinstance(edge, Sequence) or len(edge) != 2:
            raise ValueError(
                f"laplacian_penalty: each edge must be a pair (i, j) of keys of params, got "
                f"{edge!r}; {_pair_advice(edge, edges)}"
            )
        i, j = (_key(k, edge, mapping, keys, known) for k in edge)
        if undirected is not False and _counted(i, j, seen, undirected, edge):
            continue
        a, b = _member(get, i), _member(get, j)
        for k, t in ((i, a), (j, b)):
            if not (t.is_floating_point() or t.is_complex()):
                # integer squares overflow silently (int32: 60000² gave -347483648)
                raise TypeError(
                    f"laplacian_penalty: params[{k!r}] is {t.dtype}, but a soft tie pulls "
                    f"floating-point or complex parameters together; convert it with .float()"
                )
        if a.shape != b.shape:
            raise ValueError(
                f"laplacian_penalty: params[{i!r}] has shape {tuple(a.shape)} but params[{j!r}] has {tuple(b.shape)}"
            )
        d = a - b
        # ‖d‖² is Σ|d|²: for complex members (a - b)² would be complex, even negative
        # (a = 1j, b = 0 gave -1), so square the real and imaginary parts
        r = torch.view_as_real(d) if d.is_complex() else d
        out = r.dtype if out is None else torch.promote_types(out, r.dtype)
        # float16 squares overflow past |d| = 256: a penalty of 180 came back inf (stop
        # 39); squared and summed in float32, rounded once to the members' dtype below
        term = (r.float() if r.dtype in _HALF else r).pow(2).sum()
        total = term if total is None else total + term
    if total is None:  # no edges: a zero of the dtype the penalty has with edges
        first = _member(get, keys[0]) if keys else torch.zeros(())
        # stop 58: complex members gave a complex zero, which made the loss complex
        # (backward refused it) where an edge gives a real penalty
        real = torch.view_as_real(first).dtype if first.is_complex() else first.dtype
        return first.new_zeros((), dtype=real)
    penalty = 0.5 * lam * total
    return penalty.to(out) if out in _HALF else penalty


def _counted(i: object, j: object, seen: set, undirected: bool | None, edge: object) -> bool:
    """Whether edge ``(i, j)`` is already in the sum (``undirected=True``: either way round);
    with ``undirected=None`` its reverse in ``seen`` is refused. Records ``(i, j)``."""
    try:
        back, again = (j, i) in seen, (i, j) in seen
    except TypeError:  # an unhashable key (a list of a list's keys): no pair to compare
        return False
    if undirected is None and back and i != j:
        # stop 59: torch_geometric keeps an undirected graph's every edge both ways, and
        # edge_index.T.tolist() (this function's own advice) summed each twice: 4.0 for 2.0
        raise ValueError(
            f"laplacian_penalty: edge {_show(edge)} and its reverse ({j!r}, {i!r}) are both "
            f"given, so the pair would count twice (an undirected graph stored both ways, "
            f"as torch_geometric's edge_index is); pass undirected=True to count each pair "
            f"once, or undirected=False to sum every listed edge"
        )
    seen.add((i, j))
    return bool(undirected) and (back or again)


def _check_edges_container(edges: object) -> None:
    """Refuse ``edges`` that cannot be read as pairs of keys, naming the conversion."""
    if isinstance(edges, (torch.Tensor, np.ndarray)):
        # stop 58: an (E, 2) tensor was refused edge by edge as "not a pair"; a (2, E)
        # edge_index (torch_geometric's layout) reads as pairs only after a transpose, and
        # a (2, 2) one would read either way, so neither is guessed
        raise TypeError(
            f"laplacian_penalty: edges must be pairs (i, j) of keys of params, got a "
            f"{type(edges).__name__} of shape {tuple(edges.shape)}; pass edges.tolist() for "
            f"one pair per row (shape (E, 2)), or edge_index.T.tolist() for a (2, E) "
            f"edge_index (torch_geometric's layout; with undirected=True when it stores "
            f"each edge both ways, as to_undirected does)"
        )
    if hasattr(edges, "adj") and hasattr(edges, "nodes"):
        # stop 58: a networkx graph iterates its nodes; grid_2d_graph's nodes are pairs
        # (0, 1), ..., read as edges between members 0 and 1: a penalty of 1.0 for 5.0
        raise TypeError(
            f"laplacian_penalty: edges is a {type(edges).__name__} (a graph): iterating it "
            f"gives its nodes, not its edges; pass G.edges (params keyed by node, or "
            f"[(index[u], index[v]) for u, v in G.edges] for a list)"
        )
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Iterable):
        raise TypeError(
            f"laplacian_penalty: edges must be an iterable of pairs (i, j) of keys of params, "
            f"got {type(edges).__name__} {edges!r}; pass [] for no edges"
        )


def _members(params: object) -> tuple[bool, list, object]:
    """``(mapping, keys, get)`` of ``params``: a mapping is keyed by its keys, a sequence by
    position; any other iterable (``model.parameters()``) is listed once, in its order."""
    # nn.ParameterDict is no Mapping, but is keyed like one (it was indexed 0, 1, ...)
    if isinstance(params, (Mapping, torch.nn.ParameterDict)):
        return True, list(params.keys()), params.__getitem__
    if isinstance(params, AbstractSet):
        # a set's order is arbitrary: index 0 could name any member
        raise TypeError(
            f"laplacian_penalty: params is a {type(params).__name__}, whose order is "
            f"arbitrary, so an edge's index names no particular member; pass a list (or a "
            f"dict keyed by name)"
        )
    if not (hasattr(params, "__len__") and hasattr(params, "__getitem__")):
        if not isinstance(params, Iterable):
            raise TypeError(
                f"laplacian_penalty: params must be a list or a mapping of tensors, got "
                f"{type(params).__name__}"
            )
        # stop 58: model.parameters() (a generator) failed in len(), in Python's words
        params = list(params)
    if len(params) and _named(params[0]):
        # stop 58 (review): model.named_parameters() was listed as (name, tensor) pairs:
        # edges by name read "not in params [0, 1, ...]", edges by index "a tuple, not a
        # tensor" with advice that named neither the cause nor dict()
        raise TypeError(
            f"laplacian_penalty: params holds (name, tensor) pairs "
            f"({params[0][0]!r}, ...), as model.named_parameters() gives them; pass "
            f"dict(model.named_parameters()) to name members in edges, or "
            f"list(model.parameters()) to index them"
        )
    return False, list(range(len(params))), params.__getitem__


def _named(item: object) -> bool:
    """Whether ``item`` is a ``(name, tensor)`` pair, as ``named_parameters()`` yields."""
    return (
        type(item) is tuple
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], torch.Tensor)
    )


def _key(k: object, edge: object, mapping: bool, keys: list, known: set) -> object:
    """``k`` of ``edge`` as a key of params: a 0-d integer tensor is its int; a bool (Python,
    NumPy or tensor) is no index of a list."""
    if isinstance(k, torch.Tensor) and k.ndim == 0 and not k.is_floating_point():
        k = k.item()  # zip(*edge_index) gives 0-d tensors; a dict missed them (hashed by id)
    elif isinstance(k, np.ndarray) and k.ndim == 0 and k.dtype.kind in "biu":
        # stop 59 (review): a 0-d array (t.numpy() of a 0-d tensor) is unhashable, so an
        # edge and its reverse were not seen (both counted: 2.18 for 1.09, also with
        # undirected=True), and np.array(True) failed in NumPy's words, naming no edge
        k = k.item()
    if not mapping and isinstance(k, (float, np.floating)):
        # stop 62: 1.0 passed the key check (1.0 == 1) and failed in list indexing,
        # "list indices must be integers or slices, not float", naming no edge
        fix = (
            f"use the int {int(k)}" if float(k).is_integer() else f"use the ints 0..{len(keys) - 1}"
        )
        raise ValueError(
            f"laplacian_penalty: edge {_show(edge)} names {k!r}, a float, which is not an "
            f"index of params (a list); {fix}"
        )
    if not mapping and isinstance(k, (bool, np.bool_)):
        # True == 1: it indexed params[1] (np.True_ and tensor(True) too, stop 58)
        raise ValueError(
            f"laplacian_penalty: edge {_show(edge)} names {k!r}, which is not an index of "
            f"params (a bool); use the ints 0..{len(keys) - 1}"
        )
    if not _is_key(k, known, keys):
        raise ValueError(
            f"laplacian_penalty: edge {_show(edge)} names {k!r}, which is not in params {keys[:8]}"
        )
    return k


def _pair_advice(edge: object, edges: object) -> str:
    """The fix for an edge that is not a pair."""
    if isinstance(edge, Sequence) and not isinstance(edge, (str, bytes)) and len(edge) == 3:
        # stop 58: (u, v, w) from G.edges(data="weight") or (u, v, key) from a MultiGraph's
        # G.edges were told to "split a longer chain", which makes (v, w) an edge
        return (
            "a triple is no edge: for (i, j, weight) sum one penalty per edge, "
            "sum(laplacian_penalty(params, [(i, j)], lam * w) for i, j, w in edges); for a "
            "networkx MultiGraph's (u, v, key) pass G.edges() (its pairs); a chain (i, j, k) "
            "is the pairs [(i, j), (j, k)]"
        )
    if isinstance(edge, Sequence) and not isinstance(edge, (str, bytes)) and len(edge) > 2:
        return "split a longer chain into pairs"
    if isinstance(edges, Sequence) and len(edges) == 2 and not isinstance(edge, Sequence):
        # stop 58: edges=(0, 1), one pair not wrapped, was told to split a chain
        return (
            f"edges is a list of pairs: for the one edge {tuple(edges)!r} pass [{tuple(edges)!r}]"
        )
    return "give each edge as a tuple (i, j) of two keys"


def _is_key(k: object, known: set, keys: list) -> bool:
    """Whether ``k`` is one of ``keys`` (``known`` is their set; an unhashable ``k``, a
    list, is looked for by equality)."""
    try:
        return k in known
    except TypeError:
        return k in keys


def _show(edge: object) -> str:
    i, j = edge
    return f"({i!r}, {j!r})"


def _member(get: object, k: object) -> torch.Tensor:
    """``params[k]``, refused when it is no tensor (a module, a NumPy array)."""
    t = get(k)
    if not isinstance(t, torch.Tensor):
        # stop 58: a dict of modules failed in "'Linear' object has no attribute
        # 'is_floating_point'"
        raise TypeError(
            f"laplacian_penalty: params[{k!r}] is a {type(t).__name__}, not a tensor; pass "
            f"the tensors to pull together (module.weight, one penalty per parameter name; "
            f"torch.as_tensor(x) for an array)"
        )
    return t
