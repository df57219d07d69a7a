"""Fast and slow weights: meta-learning as parameter sharing across tasks (claim C7).

Many meta-learning methods split a model's parameters in two. **Slow weights**
(the body) are shared by every task and trained slowly, across many tasks, in
an outer loop. **Fast weights** (e.g. the head) start from a shared,
meta-learned value and are adapted to each new task in a few inner-loop
gradient steps on its few examples. With the fast weights = the last layer this
is ANIL (Raghu et al. 2020); with every weight fast it is MAML (Finn et al. 2017).

Across tasks this is a tie: the slow weights are one tensor for all tasks, the
fast ones one copy per task. A new task costs only its fast weights.

Everything runs through ``torch.func``: the inner loop is ``grad`` of a
``functional_call`` that substitutes the fast weights, and a batch of tasks is
one ``vmap``; the outer gradient flows into the slow weights and the fast
weights' initial value, through the inner steps (second order) unless
``first_order=True``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from tying.core.inventory import Inventory
from tying.core.patterns import Pattern

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _matches(patterns: list[Pattern], name: str) -> bool:
    parts = name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(p.match(prefix) is not None for p in patterns for prefix in prefixes)


def _trainable_paths(model: nn.Module) -> dict[int, list[str]]:
    """Every slot path of each trainable tensor (hand ties and Plan ties, any relation)."""
    inv = Inventory(model)
    paths: dict[int, list[str]] = {}
    for path in inv.slots:
        t = inv.tensor(inv.root_of(path))
        if isinstance(t, nn.Parameter) and t.requires_grad:
            paths.setdefault(id(t), []).append(path)
    return paths


def _refuse_split_ties(paths: dict[int, list[str]], patterns: list[Pattern]) -> None:
    """Refuse a tensor reachable from two paths of which ``fast`` matches one only.

    ``named_parameters()`` names a tied tensor once, by its first path, and the split
    was decided on that name: with ``net[2].weight = net[0].weight``, ``fast=["2"]`` made
    ``2.bias`` fast and left ``2.weight`` slow (it is ``0.weight``), with no error (stop 31).
    One tensor cannot be both.
    """
    for names in paths.values():
        hit = [n for n in names if _matches(patterns, n)]
        if hit and len(hit) != len(names):
            miss = [n for n in names if n not in hit]
            raise ValueError(
                f"{hit[0]} is tied to {miss[0]} (one tensor), and the fast patterns match "
                f"{hit[0]} but not {miss[0]}: a tensor cannot be both fast and slow. Make "
                f"both paths fast (add a pattern for {miss[0]}), neither, or untie them"
            )


def _check_rate(name: str, value) -> None:
    """An inner learning rate: a finite number >= 0 (stop 32: a negative one ascended the
    support loss, and ``True`` was taken for 1.0, with no error)."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0
    ):
        raise ValueError(
            f"{name} must be a finite number, got {value!r}; a rate >= 0 (a negative one "
            f"ascends the support loss)"
        )


def _refuse_running_stats(owner: str, model: nn.Module) -> None:
    """A norm layer that updates running statistics in training mode, refused by name.

    The inner loop is ``torch.func.grad``, which cannot write a buffer in place: a
    BatchNorm in training mode failed deep inside torch ("attempted to call in-place
    operation (aten::add_.Tensor) that would mutate a captured Tensor"), naming neither
    the layer nor the fix (stop 55).
    """
    for path, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats:
            raise ValueError(
                f"{owner}: {path or '<root>'} is a {type(m).__name__} in training mode, which "
                f"writes its running statistics in place at every forward; the inner loop "
                f"(torch.func.grad) cannot. Call model.eval() (running statistics as they "
                f"are), or build it with track_running_stats=False (each set's own batch "
                f"statistics)"
            )


def _rows(t) -> int | None:
    return t.shape[0] if isinstance(t, torch.Tensor) and t.ndim else None


def _check_rows(what: str, x, y, fix: str = "or adapt with steps=0") -> None:
    """A set of examples: rows in ``x`` and as many in ``y`` (stop 55).

    An empty support set gave a mean loss of NaN whose gradient is 0, so ``adapt``
    returned the shared init as the "adapted" weights, with no error.
    """
    nx, ny = _rows(x), _rows(y)
    if nx == 0:
        raise ValueError(
            f"{what} has no rows (x of shape {tuple(x.shape)}): a mean loss over no "
            f"examples is NaN with gradient 0, so nothing is adapted or measured; give "
            f"every task examples, {fix}"
        )
    # one target row broadcast over every input (a constant target) was right before
    if nx is not None and ny is not None and nx != ny and ny != 1:
        raise ValueError(
            f"{what} has {nx} inputs but {ny} targets; x and y must hold the same rows"
        )


def _check_task_batch(xs, ys, xq, yq) -> None:
    """``meta_loss``'s four tensors: one shared number of tasks (> 0), rows in each set."""
    counts = {n: _rows(t) for n, t in (("xs", xs), ("ys", ys), ("xq", xq), ("yq", yq))}
    if len(set(counts.values())) != 1 or None in counts.values():
        raise ValueError(
            f"meta_loss: xs, ys, xq, yq must be tensors with one leading task dimension of "
            f"the same size, got {counts}"
        )
    if counts["xs"] == 0:
        raise ValueError(
            "meta_loss: the batch holds no task (xs of shape "
            f"{tuple(xs.shape)}): the mean query loss over no task is NaN; draw at least "
            f"one task"
        )
    _check_rows("meta_loss: each query set", xq[0], yq[0], "or draw query examples for every task")


class FastSlow:
    """Split ``model``'s parameters into fast (matching ``fast``) and slow (the rest).

    Args:
        model: the network for one task.
        fast: glob patterns of the fast parameters or of modules holding them
            (``"head"``, ``"*.bias"``; ``*`` one path segment, ``**`` several).
        inner_lr: the inner-loop learning rate.
        inner_steps: inner-loop gradient steps during meta-training.
        first_order: drop the second-order terms of the outer gradient.
        learn_inner_lr: learn one inner learning rate per fast weight entry in the
            outer loop, starting at ``inner_lr`` (Meta-SGD, Li et al. 2017): one
            inner step can then go much further in the right directions.

    Raises:
        ValueError: no pattern at all (``fast=[]``: nothing would be adapted); a pattern
            that matches no parameter, or one that makes every
            parameter fast *and* leaves no slow one when ``fast`` was meant to split; a
            tied tensor whose paths the patterns split into fast and slow.

    Example:
        >>> import torch
        >>> from tying.train import FastSlow
        >>> net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> fs = FastSlow(net, fast=["2"], inner_lr=0.1, inner_steps=1)
        >>> sorted(fs.fast_names), sorted(fs.slow_names)
        (['2.bias', '2.weight'], ['0.bias', '0.weight'])
        >>> fs.n_fast, fs.n_slow
        (9, 16)
    """

    def __init__(
        self,
        model: nn.Module,
        fast: Sequence[str],
        *,
        inner_lr: float = 0.1,
        inner_steps: int = 1,
        first_order: bool = False,
        learn_inner_lr: bool = False,
    ):
        if isinstance(fast, str):
            fast = [fast]
        patterns = [Pattern(p) for p in fast]
        if not patterns:  # every weight slow: adapt returned the shared init, with no error
            raise ValueError(
                "FastSlow: fast names no pattern, so no weight would be adapted (adapt would "
                "return the shared initial value for every task); name the fast parameters "
                "or the modules holding them, e.g. fast=['head'] (or fast=['**'] for MAML)"
            )
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        # every path of a trainable tensor, a tie's other paths too: named_parameters()
        # names a tied tensor by its first path only, so fast=["emb", "out"] with out.weight
        # tied to emb.weight was refused ("'out' matches no trainable parameter"), while
        # fast=["emb"] was refused for leaving out.weight slow: no list of paths passed
        # (stop 38)
        paths = _trainable_paths(model)
        for pat in patterns:
            if not any(_matches([pat], n) for ns in paths.values() for n in ns):
                raise ValueError(
                    f"fast pattern {pat.text!r} matches no trainable parameter; "
                    f"parameters are {names[:8]}{' …' if len(names) > 8 else ''}"
                )
        _refuse_split_ties(paths, patterns)
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, numbers.Integral):
            raise ValueError(f"inner_steps must be an int >= 0, got {inner_steps!r}")
        if inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {inner_steps}")
        _check_rate("inner_lr", inner_lr)
        self.model = model
        self.fast_names = [n for n in names if _matches(patterns, n)]
        self.slow_names = [n for n in names if n not in self.fast_names]
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.first_order = first_order
        params = dict(model.named_parameters())
        self.inner_lrs: dict[str, nn.Parameter] = (
            {
                n: nn.Parameter(torch.full_like(params[n].detach(), float(inner_lr)))
                for n in self.fast_names
            }
            if learn_inner_lr
            else {}
        )

    @property
    def n_fast(self) -> int:
        """Number of fast (per-task) parameter entries."""
        params = dict(self.model.named_parameters())
        return sum(params[n].numel() for n in self.fast_names)

    @property
    def n_slow(self) -> int:
        """Number of slow (shared) parameter entries."""
        params = dict(self.model.named_parameters())
        return sum(params[n].numel() for n in self.slow_names)

    def fast_init(self) -> dict[str, torch.Tensor]:
        """The fast weights' shared initial value (live parameters: the outer loop trains them)."""
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in self.fast_names}

    def predict(self, fast: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The model's output with ``fast`` substituted for the fast weights.

        Raises:
            ValueError: ``fast`` lacks a fast weight or holds a name that is not one
                (``functional_call`` ignored an unknown name and used the shared init for
                a missing one: the un-adapted model's output, with no error; stop 32).
        """
        if not isinstance(fast, dict) or fast.keys() != set(self.fast_names):
            got = sorted(fast) if isinstance(fast, dict) else type(fast).__name__
            missing = sorted(set(self.fast_names) - set(fast)) if isinstance(fast, dict) else []
            extra = sorted(set(fast) - set(self.fast_names)) if isinstance(fast, dict) else []
            raise ValueError(
                f"predict: fast must map every fast weight {sorted(self.fast_names)} to its "
                f"adapted value (as adapt returns), got {got} (missing {missing}, not fast "
                f"{extra}); pass the dict that adapt returned for this FastSlow"
            )
        return functional_call(self.model, fast, (x,))

    def adapt(
        self,
        loss_fn: LossFn,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        steps: int | None = None,
        lr: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Adapt the fast weights to one task's support set ``(x, y)``; slow weights stay.

        Args:
            loss_fn: ``(output, target) -> scalar loss``.
            x, y: the support set.
            steps: inner steps (default: ``inner_steps``); more at test time is fine.
            lr: inner learning rate (default: ``inner_lr``, or the learned ones).

        Returns:
            The task's fast weights (differentiable w.r.t. the slow ones unless
            ``first_order``).

        Raises:
            ValueError: ``steps`` not an int >= 0, a bad ``lr``; with ``steps`` > 0, a
                support set with no rows or with different numbers of rows in ``x`` and
                ``y``, or a BatchNorm (any layer with running statistics) in training
                mode, named (``torch.func.grad`` cannot write its buffers).

        Example:
            >>> import torch
            >>> from tying.train import FastSlow
            >>> net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
            >>> fs = FastSlow(net, fast=["2"], inner_lr=0.1)
            >>> x = torch.linspace(-1, 1, 10)[:, None]
            >>> mse = lambda out, y: ((out - y) ** 2).mean()
            >>> fast = fs.adapt(mse, x, 3 * x, steps=50)
            >>> with torch.no_grad():
            ...     print(bool(mse(fs.predict(fast, x), 3 * x) < mse(net(x), 3 * x)))
            True
        """
        steps = self.inner_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            # range(-1) ran no step: the "adapted" weights were the init, with no error
            raise ValueError(f"adapt: steps must be an int >= 0, got {steps!r}")
        if steps:
            _check_rows("adapt: the support set", x, y)
            _refuse_running_stats("adapt", self.model)
        if lr is not None:
            _check_rate("adapt: lr", lr)
        rates = {
            n: self.inner_lrs.get(n, self.inner_lr) if lr is None else lr for n in self.fast_names
        }

        def support_loss(fast, x, y):
            return loss_fn(functional_call(self.model, fast, (x,)), y)

        fast = self.fast_init()
        for _ in range(steps):
            g = grad(support_loss)(fast, x, y)
            if self.first_order:
                g = {n: v.detach() for n, v in g.items()}
            fast = {n: fast[n] - rates[n] * g[n] for n in fast}
        return fast

    def meta_loss(
        self,
        loss_fn: LossFn,
        xs: torch.Tensor,
        ys: torch.Tensor,
        xq: torch.Tensor,
        yq: torch.Tensor,
    ) -> torch.Tensor:
        """Mean query loss after adapting to each task's support set; tasks batched by ``vmap``.

        Args:
            loss_fn: ``(output, target) -> scalar loss``.
            xs, ys: support sets, shape ``(n_tasks, n_support, ...)``.
            xq, yq: query sets, shape ``(n_tasks, n_query, ...)``.

        Returns:
            A scalar; its gradient trains the slow weights and the fast weights' init.

        Raises:
            ValueError: no task, or a task batch whose four tensors disagree on the number
                of tasks; a support set with no rows (while ``inner_steps`` > 0) or a query
                set with no rows (a mean loss over no rows is NaN, and its gradient 0: the
                "adapted" weights were the init, or the meta-loss NaN, with no error);
                inputs and targets with different numbers of rows; a BatchNorm in
                training mode (named).
        """

        _check_task_batch(xs, ys, xq, yq)
        _refuse_running_stats("meta_loss", self.model)

        def one(xs, ys, xq, yq):
            fast = self.adapt(loss_fn, xs, ys)
            return loss_fn(functional_call(self.model, fast, (xq,)), yq)

        return vmap(one)(xs, ys, xq, yq).mean()

    def meta_fit(
        self,
        sample_tasks: Callable[[torch.Generator], tuple[torch.Tensor, ...]],
        loss_fn: LossFn,
        *,
        meta_steps: int,
        lr: float = 1e-3,
        generator: torch.Generator | None = None,
    ) -> list[float]:
        """Meta-train with Adam: each step draws a batch of tasks and descends :meth:`meta_loss`.

        Args:
            sample_tasks: ``generator -> (xs, ys, xq, yq)`` for a batch of tasks.
            loss_fn: ``(output, target) -> scalar loss``.
            meta_steps: outer steps.
            lr: outer (slow) learning rate.
            generator: passed to ``sample_tasks``.

        Returns:
            The meta-loss at every step.

        Raises:
            ValueError: ``meta_steps`` not an int >= 0 (``range(-1)`` ran no step and
                returned an empty history, the model untrained, with no error); ``lr``
                not a finite number >= 0 (a bool included); a task batch
                :meth:`meta_loss` refuses.
            FloatingPointError: a meta-loss or gradient that is not finite; that step is
                not taken (the parameters are as the previous step left them).
        """
        if (
            isinstance(meta_steps, bool)
            or not isinstance(meta_steps, numbers.Integral)
            or meta_steps < 0
        ):
            raise ValueError(
                f"meta_fit: meta_steps must be an int >= 0 (outer steps), got {meta_steps!r}"
            )
        if isinstance(lr, bool) or not (isinstance(lr, numbers.Real) and 0 <= lr < math.inf):
            # Adam took lr=True for 1.0 with no error
            raise ValueError(f"meta_fit: lr must be a finite number >= 0, got {lr!r}")
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params + list(self.inner_lrs.values()), lr=lr)
        history = []
        for step in range(meta_steps):
            xs, ys, xq, yq = sample_tasks(generator)
            opt.zero_grad(set_to_none=True)
            loss = self.meta_loss(loss_fn, xs, ys, xq, yq)
            loss.backward()
            # stop 55: a NaN/inf meta-loss (a NaN in one task's data, a diverging inner
            # loop) went into Adam, which wrote NaN into every slow weight, with no error
            # (history read nan from there on). Refused before the step: the model is as
            # the last finite step left it.
            grads = [(n, p.grad) for n, p in self._outer_params() if p.grad is not None]
            ok = torch.stack(
                [torch.isfinite(loss.detach())] + [torch.isfinite(g).all() for _, g in grads]
            )
            bad = (
                [] if bool(ok.all()) else [n for (n, _), f in zip(grads, ok[1:].tolist()) if not f]
            )
            if not bool(ok[0]) or bad:
                opt.zero_grad(set_to_none=True)
                raise FloatingPointError(
                    f"meta_fit: at step {step} the meta-loss was {loss.item():.4g} and the "
                    f"gradient of {bad[:4] or 'no parameter'} not finite; the step was not "
                    f"taken (the parameters are as before it; {len(history)} earlier steps "
                    f"of this call were taken). Check the tasks sample_tasks drew for "
                    f"NaN/inf, or lower inner_lr / lr"
                )
            opt.step()
            history.append(loss.item())
        return history

    def _outer_params(self) -> list[tuple[str, torch.Tensor]]:
        """The tensors the outer loop trains, by name (the learned inner rates too)."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        return named + [(f"inner_lr[{n}]", p) for n, p in self.inner_lrs.items()]
