"""DP-SGD that is right for tied weights: per-example gradients, clipping, noise (claim D10).

DP-SGD (Abadi et al. 2016) bounds each example's influence on a step: compute
every example's gradient ``g_b``, clip it to norm ``C``, sum, add Gaussian noise
``N(0, σ²C²)`` and average. The clipping must act on the gradient of the
*physical* parameters. A tied weight (an embedding reused as the output layer,
a layer applied twice, a decoder that reads the encoder's weight transposed) is
one tensor; the example's gradient on it is the **sum over its uses**, and that
sum is what must be clipped, as one vector together with everything else.
Clipping per use, or per logical slot, lets one example move the tensor by up
to ``C`` times the number of uses: the sensitivity, and so the privacy, is wrong.

Two ways to the per-example norms, one result:

- ``mode="vmap"``: ``torch.func.vmap(grad(...))`` of the model with
  ``model.named_parameters()`` swapped in (as ``functional_call`` does), which
  yields each physical tensor once; a tied slot reads its owner at access time,
  so the substituted tensor feeds every use and the gradient is already the sum
  over uses. Works for any model without batch-mixing layers: a BatchNorm in
  training mode is refused, and (stop 31) any forward in which an example's output
  reads another example's input, found by ghost clipping's probe. A :class:`DPSGD` builds this once and rebuilds it
  only when the model's structure changed; small models take one forward over
  expanded parameters and one autograd pass instead (same gradients, less fixed
  cost; see :mod:`tying.train.per_example`). A standard torch loss with
  ``reduction="none"`` is applied to the batch, being per-example by definition
  (:mod:`tying.train.known_losses`); any other loss, and the forward of a model of
  one's own class, run on the batch only while every torch call they make keeps each
  example's row its own (:mod:`tying.train.row_watch`), else one example at a time.
- ``mode="ghost"``: :class:`tying.train.GhostClipping`, for models made of
  Linear/Embedding layers (tied or not): norms from Gram matrices with the
  cross terms between uses, and the clipped sum without per-example gradients.

Poisson sampling (:func:`poisson_batches`) is what the accountants assume.

One private gradient (:func:`private_grad`, :func:`per_example_grads`, the clipping and
the noise) lives in :mod:`tying.train.private_gradient`, split from here (house rule 1);
its names are still importable from this module. Here: the :class:`DPSGD` step, its
state for resuming a run, and the sampling.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from tying.train.ghost import (  # noqa: F401 - _LOW_PRECISION, _autocast_off: old address
    _LOW_PRECISION,
    GhostClipping,
    _autocast_off,
)
from tying.train.per_example import (  # noqa: F401 - EXPAND_MAX_ELEMENTS: its old address
    EXPAND_MAX_ELEMENTS,
    _fingerprint,
    _PerExample,
)
from tying.train.private_gradient import (  # noqa: F401 - the moved names' old address
    CHUNK_ELEMENTS,
    MODES,
    LossFn,
    PrivateGrad,
    _accumulate,
    _check_batch,
    _check_denominator,
    _check_empty_batch,
    _check_finite_norms,
    _check_finite_release,
    _check_max_grad_norm,
    _check_noise_multiplier,
    _clip_factors,
    _clipped_sum,
    _in_param_dtypes,
    _noisy,
    _norms,
    _real,
    _rows,
    _vmap_clipped_sum,
    _vmap_grads,
    _weighted_sum,
    clip_factors,
    per_example_grads,
    per_example_norms,
    private_grad,
)


def _check_sample_rate(value) -> None:
    v = _real("sample_rate", value)
    if not 0 < v <= 1:  # NaN fails the comparison too
        raise ValueError(f"sample_rate must be in (0, 1] (batch size / data set size), got {value}")


# A batch size that Binomial(n_data, sample_rate) gives with probability below e**-40 (the
# Chernoff bound) was not drawn at that rate: refusing it costs a true Poisson run nothing.
_RATE_SURPRISE = 40.0


def _rate_surprise(b: int, n: int, q: float) -> float:
    """``n · KL(b/n ‖ q)``: by Chernoff, a Binomial(n, q) count at least as far from ``n q``
    as ``b`` has probability at most ``exp(-surprise)``."""
    if q == 1.0:
        return 0.0 if b == n else math.inf
    p = b / n
    kl = p * math.log(p / q) if p > 0 else 0.0
    if p < 1:
        kl += (1 - p) * (math.log1p(-p) - math.log1p(-q))
    return n * kl


def _check_batch_rate(b: int, n: int, q: float, run: tuple[int, int, int]) -> None:
    """Refuse a batch that cannot have been drawn at ``sample_rate`` from ``n_data`` (stop 35).

    The accountant charges every step at ``sample_rate``; batches drawn at another rate (a
    data loader whose batch size changed while ``dp.sample_rate`` did not, a rate typed for
    another data set) spent another ε, with no error: 100-row batches from 1,000 examples
    at ``sample_rate=0.01`` were charged ε = 1.21 for what cost 7.90 (RDP, 100 steps at
    σ = 1, δ = 1e-5). ``run`` holds the rows and examples of the steps since the rate was
    set, so a smaller persistent excess is found too.
    """
    if b > n:
        raise ValueError(
            f"a batch of {b} rows from n_data={n} examples: n_data must be the data set size "
            f"the batches are sampled from"
        )
    steps, rows, seen = run
    last = f"the last {steps + 1} batches hold"
    for got, size, what in ((b, n, "this batch holds"), (rows + b, seen + n, last)):
        if _rate_surprise(got, size, q) > _RATE_SURPRISE:
            expected = q * size
            raise ValueError(
                f"{what} {got} rows where Poisson sampling at sample_rate={q} from "
                f"n_data={n} gives {expected:.4g} ± {math.sqrt(expected * (1 - q)):.2g} (a "
                f"count this far off has probability below e^-{_RATE_SURPRISE:.0f}): the "
                f"accountant would charge the steps at {q}, not at the rate they were drawn "
                f"at (about {got / size:.4g}). Set dp.sample_rate to the rate the batches are "
                f"drawn at, or draw them with poisson_batches(n_data, dp.sample_rate, ...)"
            )


def _check_learning_rates(optimizer) -> None:
    for i, group in enumerate(getattr(optimizer, "param_groups", [])):
        lr = group.get("lr")
        if lr is None:
            continue
        lr = float(lr)
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(
                f"optimizer.param_groups[{i}]['lr'] must be a finite number >= 0, got {lr}: "
                f"a NaN rate makes every parameter NaN, a negative one ascends the loss"
            )


def _check_no_closure(optimizer) -> None:
    """Refuse an optimizer whose ``step`` needs a closure (``torch.optim.LBFGS``), stop 34.

    Its step re-evaluates the loss and gradient as often as its line search wants, on
    the data, outside the clipping and the noise; the DP step hands it one noisy gradient
    and no closure, and torch's "missing ... 'closure'" came after the noise was drawn.
    """
    try:
        closure = inspect.signature(optimizer.step).parameters.get("closure")
    except (TypeError, ValueError):  # a step without a signature: nothing to read
        return
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise ValueError(
            f"{type(optimizer).__name__}.step needs a closure that recomputes the loss and "
            f"its gradient, which a DP step cannot give (every evaluation would read the "
            f"private batch without clipping or noise); use a first-order optimizer "
            f"(torch.optim.SGD, Adam, AdamW, ...)"
        )


def _check_optimizer_holds(optimizer, names, params, model: nn.Module) -> None:
    """Refuse a step whose optimizer does not hold every trainable parameter of the model.

    An optimizer built before a tie, ``tying.untie`` or a replaced Parameter holds the old
    objects: the new one got its private gradient and was never updated, with no error.
    """
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:  # a duck-typed optimizer: nothing to compare against
        return
    if names is None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        names, params = [n for n, _ in named], [p for _, p in named]
    held = {id(p) for group in groups for p in group["params"]}
    missing = [n for n, p in zip(names, params) if id(p) not in held]
    if missing:
        raise ValueError(
            f"the optimizer does not hold the trainable parameter(s) {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} of the model: they would get a private "
            f"gradient and never be updated (an optimizer built before a tie, tying.untie or "
            f"a replaced Parameter holds the old objects); set dp.optimizer to one built on "
            f"model.parameters() now, or freeze them (requires_grad_(False))"
        )
    if len(held) > len(params):
        _refuse_stale_grads(groups, params, model)


def _refuse_accumulated_grads(names, params) -> None:
    """Refuse a step on trainable parameters that hold a nonzero ``.grad`` (stop 57b).

    Gradient accumulation (``loss(mb1).backward()`` then ``dp.step(..., mb2)``) had its
    first micro-batch dropped with no error: the step overwrites ``.grad`` with its own
    clipped, noised gradient (the update was mb2's alone, at sigma 0 equal to a step on
    mb2). A ``.grad`` of zeros (``zero_grad(set_to_none=False)``) holds nothing and is taken.
    """
    held = [n for n, p in zip(names, params) if p.grad is not None and bool(p.grad.any())]
    if held:
        raise ValueError(
            f"DPSGD.step: trainable parameter(s) {held[:5]}{' ...' if len(held) > 5 else ''} "
            f"hold a nonzero .grad from a backward outside the step; the step computes its "
            f"own clipped, noised gradient from its batch and would overwrite it. Clear it "
            f"first (optimizer.zero_grad(set_to_none=True)): a .grad left by a step already "
            f"taken (a warm-up of the plain optimizer, a GAN generator's loss backpropagated "
            f"through this model, a public loss's backward for logging) needs nothing more; "
            f"for gradient accumulation, also pass the micro-batches to one step as one batch "
            f"(torch.cat; mode='vmap' chunks a large one itself)"
        )


def _refuse_stale_grads(groups, params, model: nn.Module) -> None:
    """Refuse a step whose optimizer holds a gradient the DP step did not make (stop 34).

    The step sets ``.grad`` of the trainable parameters only; the optimizer then updates
    every parameter with a ``.grad``. One left by a backward outside the step (a frozen
    layer after ``loss.backward()`` on the private batch, a parameter outside the model)
    was applied unclipped and without noise: a frozen layer moved by 0.30, no error.
    """
    mine = {id(p) for p in params}
    stale = [
        (i, j, p)
        for i, group in enumerate(groups)
        for j, p in enumerate(group["params"])
        if p.grad is not None and id(p) not in mine
    ]
    if not stale:
        return
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    said = [
        f"{names[id(p)]} (requires_grad={p.requires_grad})"
        if id(p) in names
        else f"optimizer.param_groups[{i}]['params'][{j}] (not in the model)"
        for i, j, p in stale[:5]
    ]
    raise ValueError(
        f"the optimizer holds {said}{' ...' if len(stale) > 5 else ''} with a .grad the DP "
        f"step did not compute (a backward outside it); the optimizer would apply it "
        f"unclipped and without noise, outside epsilon. Clear it first "
        f"(optimizer.zero_grad(set_to_none=True)), and freeze or drop what should not move"
    )


class DPSGD:
    """Differentially private training steps for any optimizer, with an accountant.

    Args:
        model: the model (tied or not).
        optimizer: any ``torch.optim`` optimizer over ``model.parameters()``.
        noise_multiplier: ``σ``.
        max_grad_norm: the clipping bound ``C``.
        sample_rate: the Poisson sampling rate ``q`` (batch size / data set size);
            needed for the privacy accounting and the averaging denominator.
        mode: ``"vmap"`` or ``"ghost"`` (see :func:`private_grad`).
        accountant: ``"rdp"`` or ``"prv"`` (Opacus' accountants).
        generator: a ``torch.Generator`` for the noise.

    To resume a run, save :meth:`state_dict` beside the model's and the optimizer's and
    hand it to the new object's :meth:`load_state_dict`; without it ε counts from 0
    again. A ``DPSGD`` pickles (``torch.save(dp)``, ``copy.deepcopy``).

    Raises:
        ValueError: a ``sample_rate`` outside (0, 1], a ``noise_multiplier`` that is
            negative or not finite, a ``max_grad_norm`` that is not a finite number > 0,
            an optimizer learning rate that is negative or not finite, an optimizer whose
            ``step`` needs a closure (``LBFGS``), or an unknown mode/accountant. Nothing is changed by a refused call.
        TypeError: an argument of the wrong type; Opacus' ``make_private`` keywords
            (``clipping``, ``poisson_sampling``, ``loss_reduction``, ``grad_sample_mode``,
            ``batch_first``, ``noise_generator``), naming what to use here.

    Example:
        >>> import torch
        >>> from tying.train import DPSGD, poisson_batches
        >>> X, Y = torch.randn(100, 4), torch.randint(0, 2, (100,))
        >>> model = torch.nn.Linear(4, 2)
        >>> dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
        ...            max_grad_norm=1.0, sample_rate=0.1, generator=torch.Generator().manual_seed(0))
        >>> ce = lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none")
        >>> for idx in poisson_batches(100, 0.1, steps=5, generator=torch.Generator().manual_seed(1)):
        ...     _ = dp.step(ce, X[idx], Y[idx], n_data=100)
        >>> dp.steps, 0 < dp.epsilon(1e-5) < 10
        (5, True)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        sample_rate: float,
        mode: str = "vmap",
        accountant: str = "rdp",
        generator: torch.Generator | None = None,
        **opacus: object,
    ):
        from tying.train.accounting import ACCOUNTANTS

        for name in opacus:  # Opacus' make_private keywords: a bare TypeError named none (stop 56)
            if name in _MAKE_PRIVATE_NAMES:
                raise TypeError(f"DPSGD: no keyword {name!r} here; {_MAKE_PRIVATE_NAMES[name]}")
            raise TypeError(f"DPSGD.__init__() got an unexpected keyword argument {name!r}")
        _check_sample_rate(sample_rate)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
        _check_noise_multiplier(noise_multiplier)
        _check_max_grad_norm(max_grad_norm)
        _check_learning_rates(optimizer)
        _check_no_closure(optimizer)
        self.model = model
        self.optimizer = optimizer
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.sample_rate = sample_rate
        self.mode = mode
        self.accountant = accountant
        self.generator = generator
        self.steps = 0
        # (sample_rate, noise_multiplier, steps) as run: both are public and may change
        # between steps (a noise schedule), so epsilon() composes what each step used
        self.history: list[tuple[float, float, int]] = []
        # (sample_rate, steps, rows, examples) of the steps with n_data since sample_rate
        # was last set: their batch sizes must be Binomial(examples, sample_rate)
        self._drawn: tuple = (None, 0, 0, 0)
        self._ghost: GhostClipping | None = None
        if mode == "ghost":  # built here, so that a model it cannot handle is refused now
            self._ghost_plan()
        # mode="vmap": the per-example function, built at the first step and rebuilt
        # whenever the model's structure changed since (_PerExample.fresh).
        self._per_example: _PerExample | None = None

    def _ghost_plan(self) -> GhostClipping:
        """The :class:`GhostClipping` of the model as it is now.

        It maps each Linear/Embedding use to the physical tensor it reads when built; a
        tie applied or removed since (``tying.untie``) left it summing a use into a
        tensor that no longer feeds it, and the new Parameter got no gradient: 0.08 off
        ``mode="vmap"`` with no error (stop 18). Rebuilt whenever the fingerprint that
        guards the vmap way's cache changed.
        """
        key, refs = _fingerprint(self.model)
        if self._ghost is None or key != self._ghost_key:
            self._ghost = GhostClipping(self.model)
            self._ghost_key, self._ghost_refs = key, refs
        return self._ghost

    def _vmap_plan(self) -> _PerExample:
        pe = self._per_example
        if pe is None or not pe.fresh(self.model):
            pe = self._per_example = _PerExample(self.model)
        return pe

    def step(self, loss_fn: LossFn, x, y, *, n_data: int | None = None) -> PrivateGrad:
        """One DP step on a (Poisson-sampled) batch; returns the :class:`PrivateGrad`.

        Args:
            loss_fn: ``(output, target) -> per-example losses (B,)``.
            x, y: the batch (may be empty under Poisson sampling).
            n_data: the data set size; with ``sample_rate`` it gives the expected
                batch size used as the averaging denominator (default: actual size;
                steps without it on batches of different sizes warn once, as Opacus
                divides by the expected size).

        Returns:
            The :class:`PrivateGrad` that was applied.

        Raises:
            ValueError: ``x`` and ``y`` with different numbers of rows, ``n_data`` not an
                int > 0, an empty batch with noise and no ``n_data`` (it has no size to
                average by), a batch (or the run of batches since ``sample_rate`` was set)
                whose size Poisson sampling at ``sample_rate`` from ``n_data`` gives with
                probability below e^-40 (the accountant would charge another rate than
                the one drawn at), a learning rate that is negative or not finite, a
                ``noise_multiplier``, ``max_grad_norm``, ``sample_rate`` or ``mode`` set
                since construction to a value the constructor refuses, a per-example
                gradient or loss that is not finite, a noisy gradient that is not finite
                in the parameter's dtype (``noise_multiplier * max_grad_norm`` past its
                range), an optimizer that does not hold every
                trainable parameter or that holds a ``.grad`` the step did not compute (a
                frozen layer after a backward outside the step: it would move unclipped and
                without noise), a trainable parameter holding a nonzero ``.grad`` (a
                micro-batch's backward before the step: the step would drop it), a hook that per-example gradients cannot run, or a
                buffer the forward writes from the batch (its un-noised statistics of the
                private data are outside epsilon). A refused step changes nothing (parameters,
                optimizer state, step count; buffers too, except one written in place by a
                forward that writes only now and then, which the error says).
            Exception: whatever the optimizer's ``step`` raises, re-raised with a note. If
                it wrote to a parameter or its state first (or its ``step`` is one's own,
                which may write through ``p.data`` unseen), the step is counted in epsilon:
                part of the noisy gradient was released. If it provably wrote nothing (a
                ``torch.optim`` step, no version counter moved), the step is not counted and
                the ``.grad`` and the noise generator are put back.
        """
        _check_batch(x, y, self.model)
        if n_data is not None:
            if isinstance(n_data, bool) or not isinstance(n_data, numbers.Integral) or n_data <= 0:
                # 0 divides by zero (NaN parameters); a negative size turns descent into ascent.
                raise ValueError(f"n_data must be an int > 0 (the data set size), got {n_data!r}")
        _check_learning_rates(self.optimizer)
        # the settings are public and may change between steps (a schedule), so each step
        # checks the values it runs with: a max_grad_norm of 0 left the model unchanged,
        # -1 at sigma=0 ascended the loss, inf gave NaN parameters, a sample_rate of 0 with
        # n_data divided by zero, each with no error (stop 31)
        _check_noise_multiplier(self.noise_multiplier)
        _check_max_grad_norm(self.max_grad_norm)
        _check_sample_rate(self.sample_rate)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        _check_empty_batch(y, n_data, self.noise_multiplier, "n_data=")
        if n_data is None:
            self._warn_actual_size(len(y))
        drawn = None
        if n_data is not None:
            run = self._drawn[1:] if self._drawn[0] == self.sample_rate else (0, 0, 0)
            _check_batch_rate(len(y), int(n_data), self.sample_rate, run)
            drawn = (len(y), int(n_data))
        denom = None if n_data is None else self.sample_rate * int(n_data)
        ghost = self._ghost_plan() if self.mode == "ghost" else None
        pe = self._vmap_plan() if ghost is None else None
        # the plan's trainable tensors, listed when it was built (rebuilt on any change of
        # the model's structure or requires_grad, see _fingerprint): no walk per step
        names, tensors = (pe.names, pe.params) if pe is not None else ghost._trainable
        _check_optimizer_holds(self.optimizer, names, tensors, self.model)
        _refuse_accumulated_grads(names, tensors)
        # an empty Poisson batch still releases noise: _clipped_sum gives it zero sums
        res = _clipped_sum(self.model, ghost, loss_fn, x, y, self.max_grad_norm, pe)
        # what a step that fails before it releases anything must put back (stop 35): the
        # .grad it overwrites and the noise generator; versions tell whether the optimizer
        # wrote to a parameter or its state before it raised
        params = dict(zip(names, tensors))
        grads_before = [p.grad for p in tensors]
        gen_before = None if self.generator is None else self.generator.get_state()
        versions = _optimizer_versions(self.optimizer)
        stepped = False
        try:
            pg = _noisy(res, self.noise_multiplier, self.max_grad_norm, denom, self.generator)
            pg = _in_param_dtypes(pg, params)
            _check_finite_release(pg, self.noise_multiplier, self.max_grad_norm)
            for name, g in pg.grads.items():
                params[name].grad = g
            stepped = True
            self.optimizer.step()
        except BaseException as err:
            self._failed_step(err, stepped, versions, tensors, grads_before, gen_before, drawn)
            raise
        _clear_grads(self.optimizer)
        self._count_step(drawn)
        return pg

    def _warn_actual_size(self, rows: int) -> None:
        """Warn, once per object, when steps without ``n_data`` meet batches of different
        sizes (stop 56): Poisson batches divided by their own size, where Opacus (and the
        accounting) divide by the expected one. On the same 4 batches (1,000 examples,
        q = 0.0125) the update was 0.57x to 1.5x Opacus', with no word; and the size a step
        divides by is released, which the accountant does not charge for.
        """
        # a loop over fixed-size batches ends each pass on one batch shorter than the
        # first: dividing it by its own size is the mean asked for, and n_data there is
        # refused by _check_batch_rate (16 rows of 256 at q = 0.0256). Poisson batches
        # give a batch larger than the first, or a third size, within a few steps
        if self.__dict__.get("_size_warned"):
            return  # said once: no list of every Poisson batch size kept after that
        sizes = self.__dict__.setdefault("_rows_seen", [])
        if rows not in sizes:
            sizes.append(rows)
        odd = len(sizes) >= 3 or (len(sizes) == 2 and sizes[1] > sizes[0])
        if odd and not self.__dict__.get("_size_warned"):
            self._size_warned = True
            warnings.warn(
                f"DPSGD.step without n_data divides each batch by its own size, and this "
                f"run's batches have {', '.join(map(str, sizes))} rows: under Poisson "
                f"sampling that "
                f"scales each step by a size the accountant does not charge for, and differs "
                f"from Opacus, which divides by the expected size (its PrivacyEngine: "
                f"int(len(dataset) * sample_rate)); pass n_data=len(dataset) to every step "
                f"(dividing by sample_rate * n_data)",
                UserWarning,
                stacklevel=3,
            )

    def _count_step(self, drawn: tuple[int, int] | None) -> None:
        if drawn is not None:  # rows and examples of the steps at this rate (see step)
            q = self.sample_rate
            steps, rows, seen = self._drawn[1:] if self._drawn[0] == q else (0, 0, 0)
            self._drawn = (q, steps + 1, rows + drawn[0], seen + drawn[1])
        self.steps += 1
        q, sigma = self.sample_rate, self.noise_multiplier
        if self.history and self.history[-1][:2] == (q, sigma):
            self.history[-1] = (q, sigma, self.history[-1][2] + 1)
        else:
            self.history.append((q, sigma, 1))

    def _failed_step(
        self, err, stepped, versions, tensors, grads_before, gen_before, drawn
    ) -> None:
        """Account for a step that raised after the noise was drawn (stop 35).

        An optimizer that wrote part of the noisy gradient into a parameter or its state
        (the first param group, a momentum buffer) before it raised has released it: the
        step is counted, or epsilon would miss it. One that provably wrote nothing (no
        version moved, and its ``step`` is torch's own, which writes in place) released
        nothing: the .grad and the generator are put back and the step is not counted. A
        step of one's own that moved no version may still have written through ``p.data``
        (which no version counter sees): it is counted, so that epsilon stays a bound.
        """
        wrote = stepped and not _same_versions(versions, _optimizer_versions(self.optimizer))
        if wrote or (stepped and not _step_is_torchs(self.optimizer)):
            _clear_grads(self.optimizer)
            self._count_step(drawn)
            how = (
                "wrote to a parameter or its state"
                if wrote
                else "may have applied part of it (a step of one's own: a write through "
                "p.data moves no version counter, so 'nothing changed' cannot be told)"
            )
            note = (
                f"tying.train.DPSGD: the optimizer's step raised after it was handed the noisy "
                f"gradient and {how}; the step is counted in epsilon (dp.steps = "
                f"{self.steps}) and its noise is not drawn again. Check the parameters "
                f"before going on"
            )
        else:
            for p, g in zip(tensors, grads_before):
                p.grad = g
            if gen_before is not None:
                self.generator.set_state(gen_before)
            note = (
                "tying.train.DPSGD: the step raised before the optimizer changed anything; "
                "it is not counted, and the parameters, their .grad and the noise generator "
                "are as they were"
            )
        if hasattr(err, "add_note"):  # Python >= 3.11
            err.add_note(note)

    # what the privacy accounting of a resumed run depends on (see state_dict)
    SETTINGS = ("noise_multiplier", "max_grad_norm", "sample_rate", "mode", "accountant")

    def state_dict(self) -> dict:
        """What a resumed run needs to go on spending ε where this one stopped.

        The model's and the optimizer's states are theirs to save (``model.state_dict()``,
        ``optimizer.state_dict()``), as with Opacus' ``PrivacyEngine.save_checkpoint``,
        which saves its accountant's history beside them. A new :class:`DPSGD` that is
        not given this state counts ε from 0 again: every step already taken would be
        missing from :meth:`epsilon` (stop 32, round 4).

        Returns:
            ``{"steps", "history", "noise_multiplier", "max_grad_norm", "sample_rate",
            "mode", "accountant", "drawn"}`` (``"drawn"``: the running record of batch sizes
            behind the batch-rate check, ``[sample_rate, steps, rows, examples]`` of the
            steps with ``n_data`` since the rate was last set, or None), plus
            ``"generator_state"`` when a ``generator`` was given (so that a resumed run draws the noise an uninterrupted one would, not
            the first steps' noise again); plain Python values and one tensor, which
            ``torch.save`` and ``torch.load(weights_only=True)`` take.

        Example:
            >>> import torch
            >>> from tying.train import DPSGD
            >>> model = torch.nn.Linear(4, 2)
            >>> make = lambda: DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1),
            ...                      noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1)
            >>> ce = lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none")
            >>> dp = make()
            >>> for _ in range(3):
            ...     _ = dp.step(ce, torch.randn(10, 4), torch.randint(0, 2, (10,)))
            >>> resumed = make()
            >>> resumed.load_state_dict(dp.state_dict())
            >>> resumed.steps, resumed.epsilon(1e-5) == dp.epsilon(1e-5)
            (3, True)
        """
        # plain Python numbers (stop 36): a NumPy setting (np.float64(1.0) from a config
        # array) was saved as is, and torch.load's default weights_only=True refused the
        # checkpoint; float() keeps the value bit for bit
        state = {
            "steps": int(self.steps),
            "history": [(float(q), float(s), int(n)) for q, s, n in self.history],
            **{k: getattr(self, k) for k in self.SETTINGS},
        }
        for k in ("noise_multiplier", "max_grad_norm", "sample_rate"):
            state[k] = float(state[k])
        # the batch-rate check's running record (stop 36): without it a resumed run started
        # that check over, so batches drawn at another rate since the last step before the
        # checkpoint went unseen until enough new ones added up again
        q, *counts = self._drawn
        state["drawn"] = None if q is None else [float(q), *(int(c) for c in counts)]
        if self.generator is not None:
            state["generator_state"] = self.generator.get_state()
        return state

    def load_state_dict(self, state_dict, **settings) -> None:
        """Go on from a :meth:`state_dict`: its steps and history (so that :meth:`epsilon`
        charges every step taken before), and its generator state.

        Args:
            state_dict: what :meth:`state_dict` returned. A state saved before stop 36 has
                no ``"drawn"`` record: it loads, and the batch-rate check starts over from
                the next step (as it did for every resumed run before).
            **settings: any of ``noise_multiplier``, ``max_grad_norm``, ``sample_rate``,
                ``mode``, ``accountant``, to go on with a value other than the one the
                state was saved with (this object then takes it). The history keeps
                every past step at the values it ran with.

        Raises:
            ValueError: a key missing or unknown (not a DPSGD state); steps, history or a
                setting that the constructor refuses, or steps that the history does not
                account for; a setting of this object that differs from the state's and
                was not passed, naming it; a saved generator state and no ``generator`` on
                this object (or one of another device); a ``"drawn"`` record that is not
                ``[sample_rate, steps, rows, examples]`` as saved. A refused call changes
                nothing.
            TypeError: a keyword that is not one of the settings.
        """
        from tying.train.accounting import ACCOUNTANTS

        unknown_kw = sorted(set(settings) - set(self.SETTINGS))
        if unknown_kw:
            raise TypeError(
                f"load_state_dict() got unexpected keyword(s) {unknown_kw}; the settings "
                f"that may be passed are {list(self.SETTINGS)}"
            )
        if not isinstance(state_dict, dict):
            raise TypeError(
                f"state_dict must be the dict DPSGD.state_dict() returned, got "
                f"{type(state_dict).__name__}"
            )
        required = {"steps", "history", *self.SETTINGS}
        missing = sorted(required - set(state_dict))
        extra = sorted(set(state_dict) - required - {"generator_state", "drawn"})
        if missing or extra:
            raise ValueError(
                f"not a DPSGD state: keys missing {missing}, unknown {extra}; pass what "
                f"DPSGD.state_dict() returned (not the model's or the optimizer's state)"
            )
        history = _checked_history(state_dict["history"])
        steps = state_dict["steps"]
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"state_dict['steps'] must be an int >= 0, got {steps!r}")
        if sum(n for _, _, n in history) != steps:
            raise ValueError(
                f"state_dict['steps'] is {steps} but its history records "
                f"{sum(n for _, _, n in history)} steps: the state is not one DPSGD saved"
            )
        checks = {
            "noise_multiplier": _check_noise_multiplier,
            "max_grad_norm": _check_max_grad_norm,
            "sample_rate": _check_sample_rate,
            "mode": lambda v: _check_choice("mode", v, MODES),
            "accountant": lambda v: _check_choice("accountant", v, ACCOUNTANTS),
        }
        for k in self.SETTINGS:
            checks[k](state_dict[k])
            if k in settings:
                checks[k](settings[k])
        differ = [
            k for k in self.SETTINGS if k not in settings and getattr(self, k) != state_dict[k]
        ]
        if differ:
            said = "; ".join(
                f"{k} was {state_dict[k]!r} in the state, this DPSGD has {getattr(self, k)!r}"
                for k in differ
            )
            keep = ", ".join(f"{k}={getattr(self, k)!r}" for k in differ)
            raise ValueError(
                f"load_state_dict: the state was saved with other settings ({said}). Build "
                f"the DPSGD with the saved values to go on as before, or pass them "
                f"explicitly to go on with this object's: "
                f"dp.load_state_dict(state, {keep}) (past steps stay charged at the values "
                f"they ran with)"
            )
        new = {k: settings.get(k, state_dict[k]) for k in self.SETTINGS}
        drawn = _checked_drawn(state_dict.get("drawn"), int(steps))
        gen_state = state_dict.get("generator_state")
        if gen_state is not None and self.generator is None:
            # stop 36: the saved noise state was dropped without a word, and the resumed
            # run drew its noise from torch's global generator instead of going on where
            # the saved run stopped (not the update an uninterrupted run makes)
            raise ValueError(
                "load_state_dict: the state holds the noise generator's state "
                "('generator_state', saved from a DPSGD built with generator=...), but this "
                "DPSGD has no generator to take it, so the resumed run would not draw the "
                "noise an uninterrupted one would; build it with generator=torch.Generator() "
                "(on the saved run's device), or drop the key (state.pop('generator_state')) "
                "to draw from torch's global generator"
            )
        if gen_state is not None:
            own = self.generator.get_state()
            if (
                not isinstance(gen_state, torch.Tensor)
                or gen_state.dtype != torch.uint8
                or gen_state.shape != own.shape
            ):
                got = (
                    f"a {tuple(gen_state.shape)} {gen_state.dtype} tensor"
                    if isinstance(gen_state, torch.Tensor)
                    else type(gen_state).__name__
                )
                raise ValueError(
                    f"state_dict['generator_state'] must be the uint8 tensor "
                    f"torch.Generator.get_state() returns for this DPSGD's generator (on "
                    f"{self.generator.device}, shape {tuple(own.shape)}), got {got}; build the "
                    f"generator on the saved run's device"
                )
        if new["mode"] == "ghost" and self.mode != "ghost":
            self._ghost_plan()  # a model ghost clipping cannot handle is refused here
        if gen_state is not None:
            self.generator.set_state(gen_state)  # before any setting: a refusal changes nothing
        for k, v in new.items():
            setattr(self, k, v)
        self.history = history
        self.steps = int(steps)
        self._drawn = drawn

    def __getstate__(self) -> dict:
        """Everything but the caches of per-example functions (``vmap`` closures, which
        do not pickle: ``torch.save(dp)`` and ``copy.deepcopy(dp)`` failed), rebuilt at
        the next step."""
        state = self.__dict__.copy()
        state["_per_example"] = None
        state["_ghost"] = None
        state.pop("_ghost_key", None)
        state.pop("_ghost_refs", None)
        return state

    def __setstate__(self, state: dict) -> None:
        state.setdefault("_drawn", (None, 0, 0, 0))  # pickled before stop 35
        self.__dict__.update(state)

    def __getattr__(self, name: str):
        # only reached for a missing attribute: Opacus' PrivacyEngine.get_epsilon(delta)
        # defaults to the PRV accountant, so the same name here would give another ε
        if name == "get_epsilon":
            raise AttributeError(
                "'DPSGD' object has no attribute 'get_epsilon' (Opacus' PrivacyEngine method, "
                "accountant 'prv' by default); use dp.epsilon(delta), by the accountant given "
                "to DPSGD (default 'rdp', a larger ε; DPSGD(..., accountant='prv') gives "
                "Opacus' engine's figures)"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def epsilon(self, delta: float) -> float:
        """ε spent so far at ``delta`` by the chosen accountant (see :func:`tying.train.epsilon`),
        each step at the noise and sampling rate it ran with (``self.history``).

        Raises:
            ValueError: ``delta`` outside (0, 1); ``steps`` that the history does not
                account for; with ``accountant="prv"``, a case PRV cannot compute (a
                ``delta`` below its grid's rounding, a grid too large, a noise too small),
                saying to set ``dp.accountant = "rdp"``, with RDP's figure.
        """
        from tying.train.accounting import _PRVUnusable, epsilon_of_history

        if not 0 < delta < 1:  # checked here too, so that 0 steps do not hide a bad delta
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if self.steps == 0:
            return 0.0
        if sum(n for _, _, n in self.history) != self.steps:  # steps set by hand (a resume)
            raise ValueError(
                f"steps is {self.steps} but the history records "
                f"{sum(n for _, _, n in self.history)} steps: set dp.history to the "
                f"(sample_rate, noise_multiplier, steps) segments actually run, so that "
                f"epsilon charges each step at the noise it ran with"
            )
        try:
            return epsilon_of_history(self.history, delta, accountant=self.accountant)
        except _PRVUnusable as err:
            # stop 58: PRV's refusal said "use accountant='rdp'", which dp.epsilon does not
            # take (a TypeError when followed); here the accountant is this object's setting
            raise type(err)(
                f"DPSGD.epsilon({delta}) with accountant='prv': {err}. On this DPSGD, set "
                f"dp.accountant = 'rdp' and call dp.epsilon({delta}) again"
            ) from err


# Opacus make_private keywords with no counterpart on DPSGD, and what a ported script uses
_MAKE_PRIVATE_NAMES = {
    "clipping": "DPSGD clips flat (Opacus' clipping='flat': one bound max_grad_norm on each "
    "example's whole gradient), so drop it; 'per_layer' and 'adaptive' are not provided",
    "poisson_sampling": "DPSGD does not draw the batches: draw them with "
    "tying.train.poisson_batches(n, sample_rate, steps=...) (Opacus' poisson_sampling=True) "
    "and pass step(..., n_data=n) to average by the expected batch size as Opacus does",
    "loss_reduction": "step(loss_fn, ...) clips each example's gradient (loss_fn returns the "
    "(B,) losses, reduction='none'; a further dimension is summed per example, so for "
    "Opacus' 'mean' over a (B, T) token loss return its .mean(1): the (B, T) loss gives each "
    "example T times Opacus' gradient); pass step(..., n_data=n) to divide by the expected "
    "batch size as Opacus' 'mean' does. Opacus' 'sum' divides by nothing: its update is "
    "sample_rate * n_data times ours, matched by torch.optim.SGD (momentum too, no "
    "weight_decay) with lr multiplied by sample_rate * n_data",
    "grad_sample_mode": "mode='vmap' is Opacus' 'functorch', mode='ghost' its 'ghost'; for its "
    "'hooks' use tying.train.grad_sample_module",
    "batch_first": "the batch is always the first dimension of x and y",
    "noise_generator": "pass generator= (a torch.Generator for the noise)",
}


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _checked_history(history) -> list[tuple[float, float, int]]:
    """A saved history as ``(sample_rate, noise_multiplier, steps)`` tuples, each checked
    as the constructor checks the settings (σ = 0 allowed: steps without noise ran)."""
    if not isinstance(history, (list, tuple)):
        raise ValueError(
            f"state_dict['history'] must be a list of (sample_rate, noise_multiplier, "
            f"steps) segments, got {type(history).__name__}"
        )
    out = []
    for i, seg in enumerate(history):
        try:
            q, sigma, n = seg
            _check_sample_rate(q)
            _check_noise_multiplier(sigma)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"state_dict['history'][{i}] = {seg!r} is not a (sample_rate, "
                f"noise_multiplier, steps) segment DPSGD runs: {err}"
            ) from None
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
            raise ValueError(f"state_dict['history'][{i}] = {seg!r}: its steps must be an int > 0")
        out.append((q, sigma, int(n)))
    return out


def _checked_drawn(drawn, steps: int) -> tuple:
    """A saved batch-rate record (``state_dict()["drawn"]``) as :class:`DPSGD` keeps it.

    None (nothing recorded, or a state saved before stop 36) starts the check over. Else
    ``[sample_rate, steps, rows, examples]``: a rate the constructor takes, at most
    ``steps`` steps, and ``0 <= rows <= examples``.
    """
    if drawn is None:
        return (None, 0, 0, 0)
    ok = isinstance(drawn, (list, tuple)) and len(drawn) == 4
    if ok:
        q, n, rows, seen = drawn
        ints = all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (n, rows, seen)
        )
        ok = (
            ints
            and isinstance(q, numbers.Real)
            and not isinstance(q, bool)
            and 0 < q <= 1
            and 0 <= n <= steps
            and 0 <= rows <= seen
        )
    if not ok:
        raise ValueError(
            f"state_dict['drawn'] must be None or [sample_rate, steps, rows, examples] as "
            f"DPSGD.state_dict() saves it (a rate in (0, 1], at most state_dict['steps'] = "
            f"{steps} steps, 0 <= rows <= examples), got {drawn!r}; pass the state as saved, "
            f"or drop the key to start the batch-rate check over"
        )
    return (float(q), int(n), int(rows), int(seen))


def _optimizer_versions(optimizer) -> list | None:
    """The version counters of the optimizer's parameters and state tensors (and the state's
    sizes, which grow at a first step), to tell whether a step that raised wrote anything
    (stop 35); ``None`` for a duck-typed optimizer without ``param_groups``. About 0.3 µs
    a tensor (Adam on 4 parameters: 4 µs a step)."""
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        return None
    out = [p._version for group in groups for p in group["params"]]
    state = getattr(optimizer, "state", None) or {}
    out.append(len(state))
    for per_param in state.values():
        out.append(len(per_param))
        out.extend([getattr(v, "_version", v) for v in per_param.values()])  # a number as is
    return out


def _same_versions(before: list | None, after: list | None) -> bool:
    if before is None or after is None:
        return False
    try:
        return bool(before == after)
    except (TypeError, ValueError, RuntimeError):  # a state value == cannot compare (an array)
        return False


def _step_is_torchs(optimizer) -> bool:
    """Whether the optimizer's ``step`` is a ``torch.optim`` one: those write parameters
    and state in place, so the version counters see every write (``p.data.add_`` is not
    seen by them)."""
    return getattr(type(optimizer).step, "__module__", "").startswith("torch.optim.")


def _clear_grads(optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)``; for torch's own ``zero_grad``, its
    set-to-None loop without the profiler range and dynamo guard around it (~10 µs, 2 % of
    a tiny model's step, stop 23). An optimizer with a ``zero_grad`` of its own gets it."""
    if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad:
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None


def poisson_batches(
    n: int, sample_rate: float, steps: int, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index batches where each example joins each batch independently with probability ``q``.

    This is the sampling the RDP/PRV accountants analyse; fixed-size shuffled
    batches are a different mechanism. The rate is ``q`` exactly, not rounded up to
    torch's float32 grid of 2**-24 (which sampled ``q = 1e-8`` at 6e-8).

    Args:
        n: data set size.
        sample_rate: ``q`` in (0, 1].
        steps: how many batches.
        generator: a ``torch.Generator``.

    Yields:
        1-D int64 index tensors (possibly empty).

    Raises:
        ValueError: ``sample_rate`` outside (0, 1]; ``n`` or ``steps`` not an int >= 0.

    Example:
        >>> import torch
        >>> from tying.train import poisson_batches
        >>> sizes = [len(b) for b in poisson_batches(1000, 0.05, 3, torch.Generator().manual_seed(0))]
        >>> all(20 < s < 80 for s in sizes)
        True
    """
    _check_sample_rate(sample_rate)
    for name, value in (("n", n), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            # stop 62: a one-element tensor (len(dataset) as torch.tensor) named no fix
            one = callable(getattr(value, "numel", None)) and value.numel() == 1
            fix = f"; pass a Python int: {name}=int(value.item())" if one else ""
            raise ValueError(f"{name} must be an int >= 0, got {value!r}{fix}")
    # torch.rand's float32 draws lie on the grid k / 2**24, so "u < q" joined with
    # probability ceil(q * 2**24) / 2**24, not q: q = 1e-8 sampled at 6.0e-8 (6x the rate
    # the accountant charges), q = 1e-6 at 1.3 % more (stop 33). Cells below q's join; the
    # cell q falls in joins with the fraction of it below q. Draws off that cell are as
    # before, so a seed gives the same batches until an example lands on it.
    cell = math.floor(sample_rate * 2**24)  # exact: a power-of-two scaling
    part = sample_rate * 2**24 - cell  # the fraction of that cell below q
    cut = cell / 2**24  # a float32 value exactly
    for _ in range(steps):
        u = torch.rand(n, generator=generator)
        mask = u < cut
        if part > 0:
            edge = u == cut
            hits = int(edge.sum())
            if hits:
                mask[edge] = torch.rand(hits, generator=generator, dtype=torch.float64) < part
        yield mask.nonzero().squeeze(1)
