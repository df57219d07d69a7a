"""Losses whose per-example meaning is known from their definition, applied to a batch.

For any other loss, ``mode="vmap"`` computes each example's loss alone, under
``torch.func.vmap``, so that a loss that mixes examples (broadcasting an output
``(B, 1)`` against a target ``(B,)``) cannot leak one example into another's gradient;
``mode="ghost"`` applies the loss to the batch and probes it for mixing. Until stop 22
every loss went that way, at a fixed cost a step that dominated a small model's step:
cross-entropy under ``vmap`` runs through torch's Python decomposition of ``nll_loss``
(~140 µs against ~10 µs on the batch, stop 20), and the ghost probe calls the loss
once more (~57 µs).

A handful of torch losses, called with ``reduction="none"``, are per-example *by
definition*: row ``b`` of the result reads row ``b`` of the input and the target and
nothing else (given the shape conditions below, which rule out broadcasting across the
batch). :class:`KnownLosses` calls the user's ``loss_fn`` on the whole batch under a
``TorchFunctionMode`` that watches every torch call it makes, and accepts the result
only if the loss function made **exactly one** torch call, to one of these losses, on
exactly the output and target it was handed, with options whose per-example meaning is
known, and returned that call's result unchanged. Anything else (a second torch call,
an indexing, a ``.sum(1)``, another loss, another option) is stopped at its first torch
call, before it runs, and the caller takes the per-example way it took before. So
``lambda out, y: F.cross_entropy(out, y, reduction="none")`` and
``nn.CrossEntropyLoss(reduction="none")`` are recognised, and nothing that could mix
examples is.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# losses over classes: input (B, C, *d), target (B, *d) indices or (B, C, *d) probabilities
_CLASS_LOSSES = (F.cross_entropy, F.nll_loss)
# losses of one input element and the target element at the same place
_ELEMENTWISE_LOSSES = (
    F.mse_loss,
    F.l1_loss,
    F.smooth_l1_loss,
    F.huber_loss,
    F.binary_cross_entropy,
    F.binary_cross_entropy_with_logits,
)
#: The torch losses recognised (with ``reduction="none"``), by their functions.
KNOWN = _CLASS_LOSSES + _ELEMENTWISE_LOSSES
# each loss's parameters in order, with their defaults: binding by hand, as
# inspect.Signature.bind cost ~15 µs a call (a tenth of what it saves on a tiny model)
_PARAMETERS = {
    f: [(n, p.default) for n, p in inspect.signature(f).parameters.items()] for f in KNOWN
}

# A negative verdict is remembered for this many loss functions (per cache), so that a
# user's own loss pays the aborted call once, not at every step.
_REMEMBER = 16


class _Unrecognised(BaseException):
    """Stops the loss function at its first torch call that is not a known loss.

    A ``BaseException``, so that a ``try/except Exception`` in the user's loss cannot
    swallow it and carry on computing something else.
    """


def _bind(func, args, kwargs) -> dict | None:
    """``{parameter: value}`` of a call to a known loss, defaults filled; None if not one."""
    params = _PARAMETERS.get(func)
    if params is None or len(args) > len(params):
        return None
    a = {n: v for (n, _), v in zip(params, args)}
    for k, v in kwargs.items():
        if k in a:  # given twice: torch would refuse the call
            return None
        a[k] = v
    for n, default in params:
        if n not in a:
            if default is inspect.Parameter.empty:
                return None
            a[n] = default
    return a if len(a) == len(params) else None  # an unknown keyword


def _per_example_by_definition(func, args, kwargs, out, y) -> bool:
    """Whether this call is a known loss whose row b reads only row b of ``out`` and ``y``."""
    a = _bind(func, args, kwargs)
    if a is None:
        return False
    inp, target = a.get("input"), a.get("target")
    if inp is not out or target is not y or a.get("reduction", "mean") != "none":
        return False
    if a.get("size_average") is not None or a.get("reduce") is not None:
        return False  # the deprecated pair overrides reduction
    B = y.shape[0]
    if inp.dim() < 1 or inp.shape[0] != B:
        return False
    for name in ("weight", "pos_weight"):
        w = a.get(name)
        if isinstance(w, torch.Tensor) and w.requires_grad:
            return False  # a trainable weight: its gradient is no example's own (refused later)
    if func in _CLASS_LOSSES:
        # (C,) input is one unbatched example to torch; the class weight has C entries
        weight = a.get("weight")
        return inp.dim() >= 2 and (weight is None or weight.dim() == 1)
    if inp.shape != target.shape or a.get("weight") is not None:
        return False  # broadcasting would pair one example's output with another's target
    pos = a.get("pos_weight")
    if pos is None:
        return True
    # one weight per class (the last dim) is per example; a (B,) weight on a (B,) input
    # would weight example b by the b-th entry, where alone it broadcasts to all of them
    return pos.dim() == 1 and (
        pos.shape[0] == 1 or (inp.dim() >= 2 and pos.shape[0] == inp.shape[-1])
    )


class _Watch(TorchFunctionMode):
    """Lets through one known per-example loss on (out, y); stops any other torch call."""

    def __init__(self, out: torch.Tensor, y: torch.Tensor):
        super().__init__()
        self.out, self.y = out, y
        self.result: torch.Tensor | None = None
        # set at the first stop: a loss that catches the stop (a bare ``except:``) and
        # goes on to a known call computed something other than its usual result
        self.stopped = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (
            not self.stopped
            and self.result is None
            and _per_example_by_definition(func, args, kwargs, self.out, self.y)
        ):
            self.result = func(*args, **kwargs)
            return self.result
        self.stopped = True
        raise _Unrecognised


def loss_key(loss_fn) -> tuple[int, int]:
    """What a verdict on ``loss_fn`` is remembered under (also by ``row_watch.RowLosses``).

    A bound method is a new object at every attribute access: it is keyed on its parts.
    """
    owner = getattr(loss_fn, "__self__", None)
    func = getattr(loss_fn, "__func__", None)
    if owner is not None and func is not None:
        return id(owner), id(func)
    return id(loss_fn), 0


class KnownLosses:
    """Applies recognised losses to the batch; remembers the loss functions it did not.

    One per :class:`~tying.train.dp.DPSGD` plan or :class:`~tying.train.GhostClipping`.
    The negative verdicts are kept (with a reference to the function, so that its ``id``
    is not reused) for at most ``_REMEMBER`` functions; a positive one is never cached:
    every call is watched again, since a loss function may branch on its inputs.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from tying.train.known_losses import KnownLosses
        >>> known = KnownLosses()
        >>> out, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
        >>> known(lambda o, t: F.cross_entropy(o, t, reduction="none"), out, y).shape
        torch.Size([4])
        >>> known(torch.nn.CrossEntropyLoss(reduction="none"), out, y).shape
        torch.Size([4])
        >>> known(lambda o, t: F.cross_entropy(o, t), out, y) is None   # a mean mixes
        True
        >>> known(lambda o, t: (o[:, :1] - t).pow(2).mean(1), out, y.double()) is None
        True
    """

    def __init__(self):
        self._unrecognised: dict[tuple[int, int], object] = {}

    @staticmethod
    def _key(loss_fn) -> tuple[int, int]:
        return loss_key(loss_fn)

    def known_not(self, loss_fn) -> bool:
        """True if ``loss_fn`` was already found not to be a known per-example loss."""
        return self._key(loss_fn) in self._unrecognised

    def __call__(self, loss_fn, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """``loss_fn(out, y)`` if it is a known per-example loss on the batch, else None.

        Args:
            loss_fn: the user's loss function.
            out: the batch's output, batch first (B, ...).
            y: the batch's targets, batch first.

        Returns:
            The per-example losses as ``loss_fn`` returned them (``(B, ...)``), or None:
            ``loss_fn`` was stopped at a torch call that is not a known loss (its torch
            work never ran); the caller computes the loss per example instead.
        """
        if self.known_not(loss_fn) or not isinstance(out, torch.Tensor):
            return None
        if not isinstance(y, torch.Tensor) or y.dim() == 0:
            return None
        watch = _Watch(out, y)
        try:
            with watch:
                got = loss_fn(out, y)
        except _Unrecognised:
            got = None
        if got is not None and got is watch.result and not watch.stopped:
            return got
        if len(self._unrecognised) >= _REMEMBER:
            self._unrecognised.clear()
        owner = getattr(loss_fn, "__self__", None)
        self._unrecognised[self._key(loss_fn)] = (loss_fn, owner)
        return None
