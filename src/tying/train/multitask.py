"""Multi-task learning: hard and soft sharing as the two ends of one dial λ (claim C6).

Each task ``k`` has a *trunk* (the part that may be shared) and a *head* (always
its own). Three settings of one model:

- **independent**: every trunk free, λ = 0;
- **soft sharing**: a task-graph Laplacian penalty ``λ/2 Σ_(i,j)∈E ‖θ_i − θ_j‖²``
  (:func:`tying.soft.laplacian_penalty`) pulls the trunks of related tasks together;
- **hard sharing**: the trunks of each connected component of the graph are one
  tensor, declared with a :class:`tying.Plan` (:meth:`MultiTaskNet.share_hard`).

As λ → ∞ the penalty forces ``θ_i = θ_j`` along every edge, i.e. one trunk per
connected component: soft sharing becomes hard sharing. Trunks start equal (one
initial value copied to every task) so that the dial moves between the two ends
from the same point.
"""

from __future__ import annotations

import copy
import numbers
import operator
from collections.abc import Sequence

import torch
from torch import nn

import tying
from tying.train._vetting import buffers_kept, cuda_devices, run_forward


def components(n_tasks: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the task graph, each sorted, ordered by their first task.

    Args:
        n_tasks: number of tasks (nodes ``0 .. n_tasks-1``).
        edges: pairs of task indices.

    Returns:
        A list of components (lists of task indices).

    Raises:
        ValueError: an edge naming a task outside ``0 .. n_tasks-1``, or an edge that
            is not a pair.
        TypeError: ``n_tasks`` or a task of an edge that is not an int (a bool, a
            float such as ``1.0``), naming the edge.

    Example:
        >>> from tying.train import components
        >>> components(5, [(0, 1), (1, 2), (3, 4)])
        [[0, 1, 2], [3, 4]]
    """
    _check_n_tasks("components", n_tasks)
    edges = _checked_edges(n_tasks, edges)
    parent = list(range(n_tasks))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for k in range(n_tasks):
        groups.setdefault(find(k), []).append(k)
    return sorted(groups.values(), key=lambda g: g[0])


def _check_n_tasks(owner: str, n_tasks) -> None:
    """``n_tasks`` an int >= 1 (``True`` was read as 1 task)."""
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, numbers.Integral):
        raise TypeError(
            f"{owner}: n_tasks must be an int >= 1, got {type(n_tasks).__name__} {n_tasks!r}"
        )
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be >= 1, got {n_tasks}")


def _checked_edges(n_tasks: int, edges) -> list[tuple[int, int]]:
    """The task graph's edges as ``(int, int)`` pairs of tasks in ``0 .. n_tasks-1``.

    A bool was read as task 0 or 1 (``(0, True)`` joined tasks 0 and 1) and a float task
    ``1.0`` failed inside the union-find with "list indices must be integers", naming no
    edge (stop 41). Ties are named, not coerced: each task must be an int.
    """
    if isinstance(edges, (str, bytes)):
        raise TypeError(f"edges must be a list of (task, task) pairs, got {edges!r}")
    out = []
    for e in edges:
        if isinstance(e, (str, bytes)) or not (isinstance(e, Sequence) or hasattr(e, "__len__")):
            raise ValueError(f"edge {e!r} is not a (task, task) pair; edges were {edges!r:.200}")
        if len(e) != 2:
            raise ValueError(
                f"edge {tuple(e)!r} has {len(e)} entries, expected a (task, task) pair"
            )
        i, j = e
        pair = []
        for k in (i, j):
            is_bool = isinstance(k, bool) or (isinstance(k, torch.Tensor) and k.dtype == torch.bool)
            try:  # an int, a NumPy integer or an integer 0-d tensor; not a float or a bool
                index = None if is_bool else operator.index(k)
            except TypeError:
                index = None
            if index is None:
                raise TypeError(
                    f"edge ({i!r}, {j!r}) names task {k!r} ({type(k).__name__}); tasks must "
                    f"be ints in 0..{n_tasks - 1} (int(...) a float index first)"
                )
            if not 0 <= index < n_tasks:
                raise ValueError(f"edge ({i}, {j}) names task {k}, expected 0 <= task < {n_tasks}")
            pair.append(index)
        out.append((pair[0], pair[1]))
    return out


class MultiTaskNet(nn.Module):
    """One trunk and one head per task; trunks can be tied (hard) or pulled together (soft).

    Args:
        trunk: the trunk of one task; every task gets a copy with the same values.
        head: the head of one task; copied likewise.
        n_tasks: number of tasks.

    Raises:
        ValueError: ``n_tasks`` < 1.
        TypeError: ``n_tasks`` that is not an int (``True``, ``2.0``).

    Example:
        >>> import torch, tying
        >>> from tying.train import MultiTaskNet
        >>> net = MultiTaskNet(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1), n_tasks=4)
        >>> _ = net.share_hard([[0, 1], [2, 3]])        # two shared trunks
        >>> net.trunks[1].weight is net.trunks[0].weight, tying.count(net).physical
        (True, 46)
        >>> net(torch.randn(2, 4), task=3).shape
        torch.Size([2, 1])
    """

    def __init__(self, trunk: nn.Module, head: nn.Module, n_tasks: int):
        super().__init__()
        _check_n_tasks("MultiTaskNet", n_tasks)
        self.trunks = nn.ModuleList(copy.deepcopy(trunk) for _ in range(n_tasks))
        self.heads = nn.ModuleList(copy.deepcopy(head) for _ in range(n_tasks))

    @property
    def n_tasks(self) -> int:
        return len(self.trunks)

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        # a list index would take task=-1 as the last task and task=True as task 1
        if isinstance(task, bool) or not isinstance(task, numbers.Integral):
            raise TypeError(f"task must be an int, got {type(task).__name__} {task!r}")
        if not 0 <= task < self.n_tasks:
            raise ValueError(f"task must be in 0..{self.n_tasks - 1}, got {task}")
        return self.heads[task](self.trunks[task](x))

    def share_hard(self, groups: Sequence[Sequence[int]] | None = None) -> tying.ApplyReport:
        """Tie the trunks of each group to the group's first task (one tensor per group).

        Args:
            groups: lists of task indices (e.g. :func:`components` of the task
                graph); default: all tasks in one group (a fully shared trunk).

        Returns:
            The :class:`tying.ApplyReport` of the plan.

        Raises:
            ValueError: a task index out of range or in two groups; trunks already tied
                (by an earlier call) that ``groups`` puts apart: ties are only added, so
                they would stay one tensor (nothing is changed; untie first).
            TypeError: a task index that is not an int.
        """
        groups = [list(range(self.n_tasks))] if groups is None else [list(g) for g in groups]
        where: dict[int, int] = {}
        for gi, g in enumerate(groups):
            for k in g:
                if isinstance(k, bool) or not isinstance(k, numbers.Integral):
                    raise TypeError(
                        f"share_hard: task indices must be ints, got {type(k).__name__} "
                        f"{k!r} in groups {groups}"
                    )
                if not 0 <= k < self.n_tasks:
                    raise ValueError(
                        f"share_hard: task {k} is out of range 0..{self.n_tasks - 1}; groups "
                        f"were {groups}"
                    )
                if k in where:
                    raise ValueError(
                        f"share_hard: task {k} is in two groups, {groups[where[k]]} and {g}; "
                        f"put each task in one group"
                    )
                where[int(k)] = gi
        self._refuse_split_of_tied(groups, where)
        rules = [tying.share(f"trunks.{k}", like=f"trunks.{g[0]}") for g in groups for k in g[1:]]
        return tying.Plan(rules).apply(self) if rules else tying.Plan([]).apply(self)

    def _refuse_split_of_tied(self, groups: list[list[int]], where: dict[int, int]) -> None:
        """Refuse a grouping that puts apart trunks an earlier call tied (stop 38).

        ``share_hard`` only adds ties: ``share_hard([[0, 1]])`` then
        ``share_hard([[0], [1]])`` returned as if the trunks were now separate, but they
        stayed one tensor, so "independent" tasks kept training one trunk, with no error.
        A task in no group counts as its own group.
        """
        for info in tying.ties(self):
            parts = [p.split(".") for p in (info.target, info.source)]
            if not all(len(p) > 2 and p[0] == "trunks" and p[1].isdigit() for p in parts):
                continue
            i, j = (int(p[1]) for p in parts)
            if i != j and where.get(i, ("alone", i)) != where.get(j, ("alone", j)):
                raise ValueError(
                    f"share_hard: the trunks of tasks {j} and {i} are already tied "
                    f"({info.target} -> {info.source}, from an earlier share_hard), but "
                    f"groups {groups} puts them apart; share_hard only adds ties, so they "
                    f"would stay one tensor. Untie first (tying.untie(net) gives every trunk "
                    f"its own copy) or build a new MultiTaskNet; nothing was changed"
                )

    def soft_penalty(
        self, edges: Sequence[tuple[int, int]], lam: float, *, undirected: bool | None = None
    ) -> torch.Tensor:
        """``λ/2 Σ_(i,j)∈edges ‖trunk_i − trunk_j‖²`` over every trunk parameter.

        Args:
            edges: the task graph.
            lam: the dial (≥ 0).
            undirected: how an edge given both ways counts, as in
                :func:`tying.soft.laplacian_penalty` (None: refused; True: once; False: twice).

        Returns:
            A scalar tensor.

        Raises:
            ValueError: negative ``lam`` or an edge naming a missing task.
            TypeError: a task in an edge that is not an int (see :func:`components`).
        """
        edges = _checked_edges(self.n_tasks, edges)  # (0, True) was read as (0, 1)
        total = torch.zeros(())
        # every trunk's names (copies of one trunk, so one list): a trunk tied to another
        # lists none, and reading trunk 0's alone gave a penalty of 0 for every edge once
        # share_hard([[1, 0]]) had made trunk 0 the tied one, with no error (stop 38)
        names = list(dict.fromkeys(n for t in self.trunks for n, _ in t.named_parameters()))
        for name in names:
            per_task = {k: self.trunks[k].get_parameter(name) for k in range(self.n_tasks)}
            total = total + tying.soft.laplacian_penalty(
                per_task, edges, lam, undirected=undirected
            )
        return total


def fit_multitask(
    net: MultiTaskNet,
    data: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    edges: Sequence[tuple[int, int]] = (),
    lam: float = 0.0,
    steps: int = 300,
    lr: float = 0.05,
    method: str = "adam",
    undirected: bool | None = None,
) -> MultiTaskNet:
    """Train all tasks jointly, full batch: mean squared error per task + the soft penalty.

    Args:
        net: a :class:`MultiTaskNet` (hard-shared or not).
        data: one ``(X_k, y_k)`` per task.
        edges: the task graph for the soft penalty.
        lam: the penalty strength (0: none).
        steps: optimizer steps (for L-BFGS: its iterations, ``max_iter`` of one
            ``step`` call; the line search makes up to ``1.25 * steps`` evaluations).
        lr: learning rate.
        method: ``"adam"``, or ``"lbfgs"`` (full-batch L-BFGS with a strong-Wolfe line
            search: far fewer steps on smooth, small problems).
        undirected: how an edge given both ways counts in the soft penalty (see
            :meth:`MultiTaskNet.soft_penalty`).

    Returns:
        ``net``, trained.

    Raises:
        ValueError: ``len(data)`` differs from the number of tasks, an unknown method,
            ``lam`` negative, NaN or infinite, ``lr`` not a finite number > 0 (0 returned
            the net untrained), an edge naming a missing task, ``steps`` not an int >= 0,
            a task with no rows, a task whose targets are not shaped as the net's outputs (an ``(N,)`` target
            against ``(N, 1)`` outputs would broadcast to ``(N, N)``), rows that differ
            between ``X`` and ``y``, NaN/inf data, or an edge given both ways with
            ``undirected=None`` (whatever ``lam``).
        TypeError: ``lam`` not a real number (a bool, a string, a tensor of more than one
            element), or ``undirected`` not a bool or None.
        FloatingPointError: the loss became NaN/inf; the net is first put back to its
            last parameters with a finite loss.

    Example:
        >>> import torch
        >>> from tying.train import MultiTaskNet, fit_multitask
        >>> X = torch.randn(20, 3)
        >>> data = [(X, X.sum(1, keepdim=True)), (X, 2 * X.sum(1, keepdim=True))]
        >>> net = MultiTaskNet(torch.nn.Linear(3, 1), torch.nn.Linear(1, 1), n_tasks=2)
        >>> _ = net.share_hard()
        >>> _ = fit_multitask(net, data, steps=400)
        >>> with torch.no_grad():
        ...     print(bool(((net(X, 1) - data[1][1]) ** 2).mean() < 1e-2))
        True
    """
    if len(data) != net.n_tasks:
        raise ValueError(
            f"fit_multitask: got data for {len(data)} tasks, the net has {net.n_tasks}"
        )
    if method not in ("adam", "lbfgs"):
        raise ValueError(f"method must be 'adam' or 'lbfgs', got {method!r}")
    if not (isinstance(steps, numbers.Integral) and not isinstance(steps, bool) and steps == 0):
        _check_lr(lr)  # steps=0 runs no step: any lr returns the net as given, as before
    # a list once: a generator of edges was used up by the check, and the penalty then
    # read no edge at every step (λ ignored, the tasks fitted apart; stop 41)
    edges = _check_settings(net, edges, lam, steps)
    # stop 59 (review): how an edge given both ways counts, and undirected= itself, checked
    # whatever lam (as the graph is): at lam=0 undirected="yes" and a both-ways edge list
    # passed, and a sweep starting at lam=0 was refused only at its first lam > 0
    tying.soft.laplacian_penalty([torch.zeros(())] * net.n_tasks, edges, 0.0, undirected=undirected)
    _check_task_data(net, data)

    def objective() -> torch.Tensor:
        loss = sum(((net(X, k) - y) ** 2).mean() for k, (X, y) in enumerate(data))
        if lam > 0 and edges:
            loss = loss + net.soft_penalty(edges, lam, undirected=undirected)
        return loss

    params = list(net.parameters())  # one entry per physical tensor: ties counted once
    start = [p.detach().clone() for p in params]
    if method == "lbfgs":
        opt = torch.optim.LBFGS(
            params, lr=lr, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
        )

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
        final = _checked_loss(net, objective)
        if not torch.isfinite(final):
            _diverged(params, start, "L-BFGS", lr, "its start")
        return net
    opt = torch.optim.Adam(params, lr=lr)
    good = start
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = objective()
        if not torch.isfinite(loss):
            _diverged(params, good, f"step {step}", lr, "the last finite loss")
        good = [p.detach().clone() for p in params] if step else good
        loss.backward()
        opt.step()
    final = _checked_loss(net, objective)
    if not torch.isfinite(final):
        _diverged(params, good, f"step {steps}", lr, "the last finite loss")
    return net


def _check_lr(lr) -> None:
    """``lr`` a finite number > 0 (a one-element tensor too), checked before anything runs.

    torch's optimizers took ``lr=True`` for 1.0; ``lr=0`` ran every step and returned the
    net untrained (Adam and L-BFGS alike), and ``lr=inf`` ran until the loss was NaN, each
    with no error naming the rate; a string failed inside torch on ``'<='`` (stop 55).
    """
    is_real = isinstance(lr, numbers.Real) or (isinstance(lr, torch.Tensor) and lr.numel() == 1)
    if isinstance(lr, bool) or not is_real or not (0 < float(lr) < float("inf")):
        # NaN fails the comparison too
        raise ValueError(
            f"fit_multitask: lr must be a finite number > 0, got {lr!r:.40} "
            f"({type(lr).__name__}); lr=0 would return the net untrained, a negative one "
            f"ascend the loss (steps=0 runs no step)"
        )


def _check_settings(net: MultiTaskNet, edges, lam, steps) -> list[tuple[int, int]]:
    """The dial, the graph and the budget, checked whatever their values (stop 32).

    The penalty is added only for ``lam > 0``, so a negative or NaN ``lam`` fitted the
    tasks independently (λ = 0) with no error, though ``soft_penalty`` refuses both; an
    edge naming a missing task went unnoticed at λ = 0; ``steps=-3`` returned the net
    untrained.
    """
    if (
        isinstance(lam, bool)
        or not isinstance(lam, (numbers.Real, torch.Tensor))
        or (isinstance(lam, torch.Tensor) and (lam.numel() != 1 or lam.is_complex()))
    ):  # a (2,) tensor failed in float() with "only one element tensors can be converted"
        shown = f"a tensor of shape {tuple(lam.shape)}" if isinstance(lam, torch.Tensor) else ""
        raise TypeError(
            f"fit_multitask: lam must be a real number, got {shown or type(lam).__name__} "
            f"(pass a float, or a one-element tensor)"
        )
    if not (0 <= float(lam) < float("inf")):  # NaN fails the comparison too
        raise ValueError(
            f"fit_multitask: lam must be finite and >= 0 (0: independent tasks), got {lam}"
        )
    edges = _checked_edges(net.n_tasks, edges)  # an edge naming a missing task, by name
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"fit_multitask: steps must be an int >= 0, got {steps!r}")
    return edges


def _check_task_data(net: MultiTaskNet, data: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Every task's ``(X, y)``: tensors, finite, one target per row, shaped as the net's output.

    A target of shape ``(N,)`` against outputs ``(N, 1)`` broadcast the loss to ``(N, N)``:
    every output was pulled to the mean of all targets, and the fit learnt nothing with
    no error (MSE 10.5 against a target variance of 11.1).
    """
    for k, pair in enumerate(data):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"fit_multitask: data[{k}] must be a pair (X, y), got {pair!r:.80}")
        X, y = pair
        for name, t in (("X", X), ("y", y)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(
                    f"fit_multitask: task {k}'s {name} must be a tensor, got {type(t).__name__}"
                )
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(
                    f"fit_multitask: task {k}'s {name} holds {bad} NaN/inf value(s); drop or "
                    f"impute them before training"
                )
        if X.ndim and X.shape[0] == 0:  # the mean of no rows is NaN: "lower lr" misled
            raise ValueError(
                f"fit_multitask: task {k} has no rows (X of shape {tuple(X.shape)}); every "
                f"task needs data, or drop the task from the net"
            )
        if X.shape[:1] != y.shape[:1]:
            raise ValueError(
                f"fit_multitask: task {k} has {X.shape[0] if X.ndim else 0} inputs but "
                f"{y.shape[0] if y.ndim else 0} targets; X and y must hold the same rows"
            )
        # two rows (a BatchNorm in training mode refused one, naming no task), the random
        # state and the buffers kept: this check drew dropout masks and moved running
        # statistics, so a seeded fit differed from the same loop written by hand, and a
        # refused call had changed the net (stop 42)
        try:
            out_shape = run_forward(net, (X[:2], k)).shape
        except Exception as err:  # torch's "mat1 and mat2 ..." named no task (stop 55)
            err.add_note(
                f"fit_multitask: raised by the forward of task {k} on its X (shape "
                f"{tuple(X.shape)}, dtype {X.dtype}); X must be what net(X, task={k}) "
                f"takes: rows first, the trunk's input features and dtype"
            )
            raise
        if y.shape[1:] != out_shape[1:]:
            fix = "y.unsqueeze(-1)" if y.ndim + 1 == len(out_shape) else "reshape y"
            raise ValueError(
                f"fit_multitask: task {k}'s targets have shape {tuple(y.shape)} but the net's "
                f"outputs {(X.shape[0], *out_shape[1:])}; the squared error would broadcast "
                f"them against each other instead of pairing rows; {fix} to match"
            )


def _checked_loss(net: MultiTaskNet, objective) -> torch.Tensor:
    """The trained net's loss, for the finiteness check only: without gradients, the
    random state and the buffers kept (this extra forward in training mode moved a
    BatchNorm's running statistics once more than the steps run, even at ``steps=0``, and
    drew dropout masks; stop 42)."""
    with torch.no_grad(), torch.random.fork_rng(devices=cuda_devices(net, ())):
        with buffers_kept(net):
            return objective()


def _diverged(params, good, where: str, lr: float, restored: str) -> None:
    with torch.no_grad():
        for p, g in zip(params, good):
            p.copy_(g)
    raise FloatingPointError(
        f"fit_multitask: the loss became NaN/inf at {where} (lr={lr}); the net was put back "
        f"to {restored}; lower lr or scale the data"
    )
