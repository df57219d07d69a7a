"""Siamese towers: one set of parameters maps both inputs into one space.

Claim B7 (``siamese``): to decide whether two signatures were written by the same
person, map both through *the same* function into one representation and compare
distances there. Two towers whose parameters are tied give exactly that: the
distance is symmetric, ``d(x, x) = 0``, and the gradients from both inputs sum
into the one shared tensor.

Buffers (a BatchNorm's running statistics) are state, not weights, so the plan does
not tie them; a tied Siamese makes the right tower's buffers the left tower's very
tensors instead, so both sides update and read one set of statistics, as one tower
called twice does (before stop 31 each side kept its own: in eval mode the two towers
normalised differently, and ``d(x, x)`` was not 0).

:class:`Siamese` holds a ``left`` tower and a ``right`` copy; with ``tied=True`` a
:class:`tying.Plan` ties every parameter of ``right`` to ``left`` (``Same``), so
``tying.count`` shows two logical towers on one physical tower. ``tied=False``
re-initialises the right tower for the untied ("pseudo-Siamese") baseline.

Example:
    >>> import torch, tying
    >>> net = Siamese(torch.nn.Linear(5, 3))
    >>> a, b = torch.randn(4, 5), torch.randn(4, 5)
    >>> torch.equal(net.distance(a, b), net.distance(b, a)), float(net.distance(a, a).detach().max())
    (True, 0.0)
    >>> c = tying.count(net); (c.logical, c.physical)
    (36, 18)
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings

import torch
from torch import nn

from tying.core import Plan, share
from tying.core.slots import slots_of
from tying.nn._args import assert_in_graph, flag, in_graph, is_bool, scalar_value
from tying.nn._input_errors import CAUGHT, raise_if_mismatched
from tying.nn._layer_plans import apply_plan, tie_setting

__all__ = ["Siamese", "contrastive_loss"]


class Siamese(nn.Module):
    """Two towers, tied by default: ``(a, b) → (tower(a), tower(b))`` (claim B7).

    Args:
        tower: the embedding network; it is used as the left tower and deep-copied
            for the right one.
        tied: tie the right tower to the left (one physical tower). False re-draws
            the right tower top down with each module's ``reset_parameters`` (or, without
            one, torch's ``_reset_parameters``: ``nn.MultiheadAttention``,
            ``nn.Transformer``), a parent's reset deciding its children's scheme; a
            parameter that no reset reaches is named in a ``UserWarning`` (it starts as a
            copy of the left tower's).

    Buffers: with ``tied=True`` the right tower's buffers are the left tower's tensors
    (one set of running statistics, updated by both sides in training, as one tower called
    twice). They stay one tensor through ``.to()``/``.double()``/``to_empty``; after
    ``tying.untie(net)`` the next call gives the right tower copies of its own.

    Raises:
        TypeError: when ``tower`` is not an ``nn.Module``.
        ValueError: when the two inputs have different batch sizes; on a state dict whose
            left and right copies of a shared buffer differ (``load_state_dict``).

    Example:
        >>> net = Siamese(torch.nn.Linear(5, 3), tied=False)
        >>> za, zb = net(torch.randn(2, 5), torch.randn(2, 5))
        >>> za.shape, zb.shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """

    # (module path inside a tower, buffer name) of the buffers the towers share; a class
    # default so that a Siamese pickled before stop 31 (without the attribute) still runs
    _shared_buffers: tuple[tuple[str, str], ...] = ()

    def __init__(self, tower: nn.Module, *, tied: bool = True) -> None:
        super().__init__()
        if not isinstance(tower, nn.Module):
            raise TypeError(f"Siamese(tower=...) needs an nn.Module, got {type(tower).__name__}")
        self.tied = flag("Siamese", "tied", tied)
        self.left = tower
        self.right = copy.deepcopy(tower)
        if self.tied:
            apply_plan(Plan([share("right", like="left")]), self)
            # a tower with no parameter (BatchNorm1d(affine=False)) has no slot to lose:
            # read as untied at its first call, its statistics were parted (stop 55)
            self._param_tie = any(slots_of(m) for m in self.right.modules())
            self._shared_buffers = tuple(
                (path, name)
                for path, module in self.left.named_modules()
                for name, buf in module._buffers.items()
                if buf is not None
            )
            self._share_buffers()
        else:
            _redraw(self.left, self.right)

    def _share_buffers(self) -> None:
        """Point every buffer of the right tower at the left tower's tensor."""
        for path, name in self._shared_buffers:
            left, right = self.left.get_submodule(path), self.right.get_submodule(path)
            right._buffers[name] = left._buffers[name]

    def _sync_buffers(self) -> None:
        """Keep the shared buffers one tensor while the towers are tied, and part them after.

        ``tying.untie`` (core) unties parameters only; shared running statistics would
        then mix the statistics of two different towers, so the right tower gets copies.
        While tied, a buffer that became two tensors (``load_state_dict(assign=True)`` of
        a dict with two copies) is pointed back at the left one if the values agree.
        """
        if not self._shared_buffers:
            return
        if getattr(self, "_param_tie", True) and not any(slots_of(m) for m in self.right.modules()):
            for path, name in self._shared_buffers:
                right = self.right.get_submodule(path)
                right._buffers[name] = right._buffers[name].clone()
            self._shared_buffers = ()
            return
        for path, name in self._shared_buffers:
            left, right = self.left.get_submodule(path), self.right.get_submodule(path)
            a, b = left._buffers[name], right._buffers[name]
            if a is b:
                continue
            rel = f"{path}.{name}" if path else name
            if a.shape != b.shape or a.device != b.device or not torch.equal(a, b.to(a.dtype)):
                raise ValueError(
                    f"Siamese: right.{rel} is no longer left.{rel} and holds another value, but "
                    f"the towers are tied and share their statistics; assign one tensor to "
                    f"both, or tying.untie(net) for two towers"
                )
            right._buffers[name] = a

    def _apply(self, fn, recurse=True):
        # Module._apply converts each module's buffers on its own, so .to(), .double() and
        # to_empty() would give the right tower separate copies: point them back
        out = super()._apply(fn, recurse)
        if self._shared_buffers:
            self._share_buffers()
        return out

    def _tying_check_load(self, state_dict, prefix, local_metadata):
        """Refuse a state dict with two different values for the shared buffer (raises ValueError).

        Run by the layer's own load and, before anything is copied, by a load into any
        module above it (``tying.core.slot_loads.LOAD_CHECK``): refused inside a container,
        the load changes nothing (stop 51; it had loaded the modules before this one).
        """
        # the shared buffer has two keys; loading two different values into it would keep
        # the right tower's and drop the left's with no error (a state dict of a Siamese
        # from before stop 31, or of an untied one): refuse before anything is copied
        for path, name in self._shared_buffers:
            rel = f"{path}.{name}" if path else name
            lkey, rkey = f"{prefix}left.{rel}", f"{prefix}right.{rel}"
            if lkey in state_dict and rkey in state_dict:
                a, b = state_dict[lkey], state_dict[rkey]
                if a.shape != b.shape or not torch.equal(a, b.to(a.dtype)):
                    raise ValueError(
                        f"Siamese: {lkey} and {rkey} are one buffer in a tied Siamese (the "
                        f"towers share their statistics) but the state dict holds different "
                        f"values for them; keep one of them (state_dict[{rkey!r}] = "
                        f"state_dict[{lkey!r}]) or load into Siamese(..., tied=False)"
                    )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        self._tying_check_load(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )

    def embed(self, x: torch.Tensor, side: str = "left") -> torch.Tensor:
        """Embed ``x`` with one tower (``"left"`` or ``"right"``)."""
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        self._sync_buffers()
        return (self.left if side == "left" else self.right)(x)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if a.shape[:1] != b.shape[:1]:
            raise ValueError(
                f"Siamese needs the same batch size on both inputs, got {tuple(a.shape)} and "
                f"{tuple(b.shape)}"
            )
        self._sync_buffers()
        try:
            return self.left(a), self.right(b)
        except CAUGHT as e:
            raise_if_mismatched(self, e, a, b, names=("a", "b"))
            raise

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Euclidean distance between the embeddings, one per pair: ``(B,)``.

        Raises:
            ValueError: when the embeddings' dim 0 is not the inputs' batch dim 0 (or dim 1
                of a time-first ``(T, B, ...)`` input pooled to ``(B, ...)``) (one
                unbatched item, which ``nn.Linear``/``nn.Conv2d`` towers take, gave one
                "distance" per embedding coordinate or channel, with no error: stop 59b).
        """
        za, zb = self(a, b)
        if (
            a.ndim == 0
            or za.ndim == 0
            or (za.shape[0] != a.shape[0] and not self._time_first_rows(a, za))
        ):
            got = "no dim 0" if a.ndim == 0 else f"{a.shape[0]} along dim 0"
            rows = "a 0-d embedding" if za.ndim == 0 else f"{za.shape[0]} embedding rows"
            raise ValueError(
                f"Siamese.distance: one distance per pair needs one embedding row per input "
                f"item along dim 0, got inputs {tuple(a.shape)} ({got}) and {rows} "
                f"{tuple(za.shape)}; for one unbatched pair pass a.unsqueeze(0), "
                f"b.unsqueeze(0) (the distance is then of shape (1,)); a time-first tower "
                f"(a module with batch_first=False inside, inputs (T, B, ...)) must return "
                f"one row per item, (B, ...)"
            )
        return _pair_distance(za, zb, "Siamese.distance")

    def _time_first_rows(self, a: torch.Tensor, za: torch.Tensor) -> bool:
        """A time-first sequence tower's pooled output: ``(T, B, ...)`` in, ``(B, ...)`` out.

        ``nn.LSTM``/``nn.GRU``/``nn.TransformerEncoderLayer``/``nn.MultiheadAttention`` take
        the batch along dim 1 by default (``batch_first=False``): such a tower returning one
        row per item was refused at stop 59b with "put the batch first", which it cannot
        take, though its distances were right. Read from the tower's modules, not from the
        shapes alone: an unbatched image ``(3, 32, 32)`` through 32 channels and a
        ``Flatten`` gives ``(32, 900)``, the same dim-1 coincidence.
        """
        if a.ndim < 3 or not 0 < za.ndim < a.ndim or za.shape[0] != a.shape[1]:
            return False
        return any(getattr(m, "batch_first", None) is False for m in self.left.modules())

    def extra_repr(self) -> str:
        return f"tied={tie_setting(self, self.tied)}"


def contrastive_loss(
    za: torch.Tensor, zb: torch.Tensor, same: torch.Tensor, margin: float = 1.0
) -> torch.Tensor:
    """Contrastive loss (Hadsell, Chopra & LeCun 2006), averaged over pairs.

    ``same·d² + (1 − same)·max(0, margin − d)²`` with ``d = ‖za − zb‖``: pull
    matching pairs together, push others at least ``margin`` apart.

    Args:
        za, zb: embeddings ``(B, …)`` of the two inputs of each pair.
        same: ``(B,)`` with 1 for a matching pair and 0 otherwise.
        margin: how far apart non-matching pairs must be pushed (finite, > 0).

    Returns:
        A scalar tensor.

    Raises:
        ValueError: on mismatched shapes, a margin that is not > 0 and finite, labels
            not in {0, 1}, or an empty batch (the mean over no pair is NaN).

    Example:
        >>> za = torch.tensor([[0.0, 0.0], [0.0, 0.0]]); zb = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> contrastive_loss(za, zb, torch.tensor([1.0, 0.0]), margin=1.0)
        tensor(12.6250)
    """
    if za.shape != zb.shape:
        raise ValueError(
            f"contrastive_loss: za and zb must have one shape, got {tuple(za.shape)} and "
            f"{tuple(zb.shape)}"
        )
    if za.ndim == 0:
        raise ValueError(
            "contrastive_loss: za and zb must be (B, …) embeddings, one row per pair, got 0-d "
            "tensors; pass za.reshape(1, -1) for one pair"
        )
    if same.shape != za.shape[:1]:
        raise ValueError(
            f"contrastive_loss: same must be ({za.shape[0]},), one label per pair, got "
            f"{tuple(same.shape)}"
        )
    # the mean over no pair was NaN, with no error (stop 55)
    empty = (
        "contrastive_loss: the batch is empty (0 pairs), so the mean over pairs has no "
        "term to average (it would return NaN); skip the empty batch"
    )
    if torch.jit.is_tracing():  # the size is a constant of the traced graph: check in it
        same = assert_in_graph(torch.ones_like(same).sum() > 0, empty, same)
    elif za.shape[0] == 0:  # torch.compile guards on it (a size of 0 is specialised)
        raise ValueError(empty)
    # an inf margin made every matching pair's term 0·inf = NaN; True was read as 1 (stop 33)
    value = scalar_value(margin)  # a learned margin is read without its graph here
    if (
        is_bool(value)
        or isinstance(value, torch.Tensor)
        or not (value > 0 and math.isfinite(value))
    ):
        raise ValueError(f"contrastive_loss: margin must be > 0 and finite, got {margin!r}")
    labels = "contrastive_loss: same must hold 0 (different) or 1 (same) labels"
    if in_graph():  # a Python if would run at recording time only (stop 52)
        same = assert_in_graph(((same == 0) | (same == 1)).all(), labels, same)
    elif not bool(((same == 0) | (same == 1)).all()):
        raise ValueError(labels)
    same = same.to(za.dtype)
    d = _pair_distance(za, zb, "contrastive_loss")  # (B,)
    loss = same * d.square() + (1 - same) * (margin - d).clamp_min(0).square()
    return loss.mean()


def _redraw(left: nn.Module, tower: nn.Module) -> None:
    """Re-draw every parameter of the untied right ``tower`` (a deep copy of ``left``) as a
    freshly built ``left`` would be drawn; warn naming those not reached.

    Top down: a module whose parameters still hold the left tower's values calls its
    ``reset_parameters`` (torch's ``nn.MultiheadAttention`` and ``nn.Transformer`` name theirs
    ``_reset_parameters``), and its children are reset only for what that left as it was
    (and for running statistics of their own, unless a parent's reset ran). A parent's
    reset decides its children's scheme (``Attention``: Xavier, zero biases), as in
    ``TransformerBlock.reset_parameters``. A parameter the left tower holds at one constant
    value (LayerNorm's ones, a zero init) is kept. Before stop 58 every module was reset in
    turn, so ``nn.Linear``'s own reset overwrote its parent's scheme (the right tower of an
    untied ``Siamese(Attention(64, 4))`` had q_proj weights of std 0.072 for the left's
    0.124, biases up to 0.12 for 0), ``in_proj_weight`` of a ``TransformerEncoderLayer``
    kept the left's values bit for bit, and a module with no reset method at all was copied
    with no word: the untied baseline started partly tied.
    """
    lefts = dict(left.named_parameters())

    def same(name: str, p: torch.Tensor) -> bool:
        """Still the left tower's values."""
        q = lefts.get(name)
        if q is None or p.numel() == 0 or "meta" in (p.device.type, q.device.type):
            return False
        return torch.equal(p, q)

    def stale(name: str, p: torch.Tensor) -> bool:
        """Still the left tower's values, and not a constant init (LayerNorm's ones)."""
        return same(name, p) and p.numel() > 1 and not bool((p == p.reshape(-1)[0]).all())

    with torch.no_grad():
        waiting = {name for name, p in tower.named_parameters() if stale(name, p)}
        # one value cannot tell a constant init from a draw: a module holding one (nn.Linear(1,
        # 1), a 1x1 convolution of one channel) still calls its reset, as before stop 58 (the
        # right Linear(1, 1) stayed the left's bit for bit, and every later draw moved along)
        single = {n for n, p in tower.named_parameters() if p.numel() == 1 and same(n, p)}

        def visit(module: nn.Module, prefix: str, covered: bool) -> None:
            own = [(prefix + n, p) for n, p in module.named_parameters()]
            # running statistics of their own (BatchNorm) are reset unless a parent's was
            stats = not covered and any(b is not None for b in module._buffers.values())
            reset = getattr(module, "reset_parameters", None)
            if not callable(reset):
                reset = getattr(module, "_reset_parameters", None)
                reset = reset if callable(reset) and _takes_no_argument(reset) else None
            if reset is not None and (
                stats or any(name in waiting or name in single for name, _ in own)
            ):
                # a reset re-draws all of the module's parameters: what a parent's reset
                # drew, and constants, are put back so that they stand (nn.MultiheadAttention's
                # out_proj.bias, 0 in a fresh one, came out of out_proj's reset up to 0.24)
                keep = [
                    (p, p.clone()) for name, p in own if name not in waiting and name not in single
                ]
                reset()
                for p, value in keep:
                    p.copy_(value)
                covered = True
                waiting.difference_update(name for name, p in own if not stale(name, p))
                single.difference_update(name for name, p in own if not same(name, p))
            for name, child in module.named_children():
                visit(child, f"{prefix}{name}.", covered)

        visit(tower, "", False)
    missed = sorted(waiting)
    if missed:
        owners = sorted(
            {type(tower.get_submodule(name.rpartition(".")[0])).__name__ for name in missed}
        )
        shown = ", ".join(f"right.{name}" for name in missed[:5])
        more = f" and {len(missed) - 5} more" if len(missed) > 5 else ""
        warnings.warn(
            f"Siamese(tied=False): not re-drawn: {shown}{more} ({', '.join(owners)}: no "
            f"reset_parameters), so the right tower starts with the left tower's values there; "
            f"give the module a reset_parameters() method, or re-draw them after construction "
            f"(e.g. torch.nn.init.normal_(net.right.get_parameter({missed[0]!r})))",
            UserWarning,
            stacklevel=3,
        )


def _takes_no_argument(fn) -> bool:
    """Whether ``fn()`` can be called with no argument (a private torch reset may not)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params
    )


def _pair_distance(za: torch.Tensor, zb: torch.Tensor, who: str) -> torch.Tensor:
    """``‖za_i − zb_i‖`` per pair ``(B,)``; a 1-D ``(B,)`` embedding is one value per pair.

    ``flatten(1)`` of a ``(B,)`` embedding (a tower ending in one unit, flattened) crashed
    with torch's "Dimension out of range" (stop 39): it is the distance ``|za_i − zb_i|``.
    """
    if za.ndim == 0 or za.shape != zb.shape:
        raise ValueError(
            f"{who}: the embeddings must be (B, …), one row per pair, of one shape, got "
            f"{tuple(za.shape)} and {tuple(zb.shape)}"
        )
    diff = za - zb
    return (diff.unsqueeze(1) if diff.ndim == 1 else diff.flatten(1)).norm(dim=1)
