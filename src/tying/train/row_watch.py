"""Run a user's forward or loss on the whole batch, each torch call checked to keep rows apart.

Until stop 23 a model of the user's own class (not an ``nn.Sequential``) ran its forward
under ``torch.func.vmap``, one example at a time, and so did a loss written by hand:
per-example by construction, at a fixed cost of ~0.1 ms a step each, which put a tiny
own-class MLP at 0.82x Opacus (issue 19). :class:`RowWatch` runs the same code on the
batch instead, under a ``TorchFunctionMode`` that lets a torch call run only if it is
known to keep **row b of its result a function of row b of its batched inputs only**,
given the shapes it is called with (the rules below). Every tensor made so is "a row
tensor"; the inputs (and the targets, for a loss) are the first ones. The model's
trainable parameters are swapped for copies expanded to ``(B, *shape)`` (one per
example), and the only call allowed to read one is ``F.linear``, run as a ``bmm`` of
row b by copy b. So each example's output reads its own input and its own parameter
copy only, and the gradient of the summed losses on copy b is example b's own, as it
is under ``vmap``.

At the first call outside the rules (a reduction over the batch, an indexing of the
batch dimension, a broadcast that could pair two examples, a read of the batch size, a
random or in-place op, a parameter read any other way, a custom ``autograd.Function``
found in the graph) the run is stopped *before that call runs* (:class:`Stopped`, a
``BaseException`` that a ``try/except Exception`` cannot swallow) and the caller takes
the per-example way it took before. Nothing the rules allow has a side effect.

Why the shape rules are needed: under the per-example way each example is handed to the
model as a batch of one, ``(1, ...)``. An elementwise op of ``(B, 5)`` and ``(B,)``
broadcasts the ``(B,)`` along the features (mixing examples when ``B == 5``); per example
it broadcasts ``(1,)`` instead. So operands that carry the batch must have the result's
number of dimensions, and other tensors fewer (or a first dimension of 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import BackwardCFunction
from torch.overrides import TorchFunctionMode

from tying.train.known_losses import KNOWN, _per_example_by_definition, loss_key

_T = torch.Tensor


class Stopped(BaseException):
    """A call outside :class:`RowWatch`'s rules (not swallowed by ``except Exception``)."""


# one output element reads the operands' elements at its place (after broadcasting)
_ELEMENTWISE = frozenset(
    {
        torch.relu, torch.tanh, torch.sigmoid, torch.exp, torch.log, torch.log1p,
        torch.expm1, torch.abs, torch.neg, torch.sqrt, torch.rsqrt, torch.square,
        torch.sin, torch.cos, torch.erf, torch.add, torch.sub, torch.mul, torch.div,
        torch.true_divide, torch.pow, torch.maximum, torch.minimum, torch.clamp,
        F.relu, F.gelu, F.silu, F.elu, F.leaky_relu, F.softplus, F.logsigmoid, F.relu6,
        F.mish, F.tanh, F.sigmoid,
        _T.relu, _T.tanh, _T.sigmoid, _T.exp, _T.log, _T.log1p, _T.expm1, _T.abs,
        _T.neg, _T.sqrt, _T.rsqrt, _T.square, _T.sin, _T.cos, _T.add, _T.sub, _T.mul,
        _T.div, _T.pow, _T.clamp, _T.maximum, _T.minimum,
        _T.__add__, _T.__radd__, _T.__sub__, _T.__rsub__, _T.__mul__, _T.__rmul__,
        _T.__truediv__, _T.__rtruediv__, _T.__neg__, _T.__pow__, _T.__rpow__,
        _T.contiguous, _T.float, _T.double,
    }
)  # fmt: skip
# reductions (and normalisations) along the given dimension(s): position of `dim`
_ALONG_DIM = {
    torch.sum: 1, _T.sum: 1, torch.mean: 1, _T.mean: 1, torch.logsumexp: 1,
    _T.logsumexp: 1, torch.amax: 1, _T.amax: 1, torch.amin: 1, _T.amin: 1,
    torch.softmax: 1, _T.softmax: 1, F.softmax: 1, torch.log_softmax: 1,
    _T.log_softmax: 1, F.log_softmax: 1,
}  # fmt: skip
# metadata that is the same for a row tensor (B, ...) and one example's (1, ...)
_METADATA = frozenset(
    {
        _T.dim, _T.ndim.__get__, _T.dtype.__get__, _T.device.__get__,
        _T.is_floating_point, _T.requires_grad.__get__, _T.is_complex,
    }
)  # fmt: skip
# ... and for an expanded parameter (B, *shape) and the parameter itself
_PARAM_METADATA = frozenset({_T.dtype.__get__, _T.device.__get__, _T.is_floating_point})


def _tensor_args(args, kwargs) -> list:
    """The tensors among a call's arguments (and one level into lists and tuples)."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, torch.Tensor))
    if kwargs:
        for a in kwargs.values():
            if isinstance(a, torch.Tensor):
                out.append(a)
            elif isinstance(a, (list, tuple)):
                out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out


def _dims(dim, ndim: int) -> list[int] | None:
    """``dim`` (an int or a sequence of ints) made non-negative; None if not given."""
    if isinstance(dim, int) and not isinstance(dim, bool):
        return [dim % ndim] if ndim else None
    if isinstance(dim, (tuple, list, torch.Size)) and dim:
        if all(isinstance(d, int) and not isinstance(d, bool) for d in dim):
            return [d % ndim for d in dim] if ndim else None
    return None


def _arg(args, kwargs, pos: int, name: str, default=None):
    if name in kwargs:
        return kwargs[name]
    return args[pos] if len(args) > pos else default


class RowWatch(TorchFunctionMode):
    """Lets through only torch calls that keep each row of the batch its example's own.

    Args:
        rows: the batched inputs (each with the batch first, ``B`` rows).
        params: the expanded parameter copies ``(B, *shape)``: read by ``F.linear`` only.

    Use ``with watch: out = fn(...)``, then :meth:`verified` on the result. A stopped
    run raises :class:`Stopped` out of the ``with``.

    Raises:
        Stopped: a call outside the rules (before it runs), an input without ``B`` rows,
            or (from :meth:`verified`) a result that is not a row tensor made under the
            watch or whose graph holds a custom ``autograd.Function``.

    Example:
        >>> import torch
        >>> from tying.train.row_watch import RowWatch, Stopped
        >>> x = torch.randn(4, 3)
        >>> with RowWatch((x,)) as watch:
        ...     h = torch.tanh(x).sum(1)              # along the features: row b is b's
        >>> watch.verified(h).shape
        torch.Size([4])
        >>> try:
        ...     with RowWatch((x,)):
        ...         x - x.mean(0)                       # a mean over the batch mixes rows
        ... except Stopped:
        ...     print("stopped before it ran")
        stopped before it ran
    """

    def __init__(self, rows, params=()):
        super().__init__()
        self.B = rows[0].shape[0]
        self._rows: dict[int, torch.Tensor] = {}  # kept alive: no id is reused meanwhile
        self._params = {id(p): p for p in params}
        self.stopped = False
        for t in rows:
            self._row(t)
        # the inputs' own autograd history is not this run's: verified() stops there
        self._given = {id(t.grad_fn) for t in rows if t.grad_fn is not None}

    def _row(self, t):
        if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != self.B:
            self._stop()
        self._rows[id(t)] = t
        return t

    def _stop(self):
        self.stopped = True
        raise Stopped

    def is_row(self, t) -> bool:
        """Whether ``t`` is one of the inputs or a result of an allowed call on them."""
        return isinstance(t, torch.Tensor) and id(t) in self._rows

    def verified(self, out) -> torch.Tensor:
        """``out`` if it is a row tensor made by allowed calls only; else :class:`Stopped`.

        Also walks ``out``'s autograd graph: a custom ``autograd.Function`` runs its
        forward's calls under the watch, but its backward is its own and may mix rows.
        """
        if self.stopped or not self.is_row(out):
            self._stop()
        if custom_nodes(out.grad_fn, self._given):
            self._stop()
        return out

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.stopped:
            raise Stopped
        kind = _KIND.get(func)  # one look-up decides which rule applies, if any
        if kind is None:
            self._stop()  # before the call runs
        kwargs = kwargs or {}
        if kind is _LINEAR:
            return self._linear(args, kwargs)
        tensors = _tensor_args(args, kwargs)
        rows = []
        for t in tensors:
            if id(t) in self._params:
                if func in _PARAM_METADATA:
                    return func(*args, **kwargs)
                self._stop()
            if id(t) in self._rows:
                rows.append(t)
            elif t.requires_grad and kind is not _META and kind is not _SIZE:
                # a tensor that is neither a row nor a parameter copy yet needs a gradient:
                # a trainable parameter the swap did not reach (a list attribute, a
                # closure, a penalty in the loss): the per-example ways decide (refuse)
                self._stop()
        if kwargs and "out" in kwargs:
            self._stop()
        if kind is _ELEMENT:
            return self._elementwise(func, args, kwargs, tensors, rows)
        if kind is _META:
            return func(*args, **kwargs)
        if kind is _SIZE:  # the batch size reads B here and 1 per example
            d = _arg(args, kwargs, 1, "dim")
            if rows and (d is None or _dims(d, args[0].dim()) == [0]):
                self._stop()
            return func(*args, **kwargs)
        if not rows:  # a call on constants only: fine if it is deterministic and listed
            if kind is _ALONG or func is _T.__getitem__:
                return func(*args, **kwargs)
            self._stop()
        if kind is _ALONG:
            return self._along_dim(func, args, kwargs, tensors)
        if not _STRUCTURAL[func](self, args, kwargs, tensors):
            self._stop()
        return self._row(func(*args, **kwargs))

    def _elementwise(self, func, args, kwargs, tensors, rows):
        # in-place (F.relu(x, True), inplace=True) writes into a tensor autograd saved
        if any(v is True for v in (*args[1:], *kwargs.values())):
            self._stop()
        if not rows:
            return func(*args, **kwargs)
        ndim = max(t.dim() for t in tensors)  # the result's, after broadcasting
        for t in tensors:
            if id(t) in self._rows:
                if t.dim() != ndim:  # broadcast would align the batch with a feature
                    self._stop()
            elif t.dim() == ndim and t.shape[0] != 1:
                self._stop()  # a constant with a batch-sized first dimension
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or out.dim() != ndim:
            self._stop()
        return self._row(out)

    def _along_dim(self, func, args, kwargs, tensors):
        x = args[0] if args else None
        if len(tensors) != 1 or not self.is_row(x):
            self._stop()
        dims = _dims(_arg(args, kwargs, _ALONG_DIM[func], "dim"), x.dim())
        if dims is None or 0 in dims:  # all dimensions, or the batch's: mixes examples
            self._stop()
        return self._row(func(*args, **kwargs))

    def _linear(self, args, kwargs):
        x = _arg(args, kwargs, 0, "input")
        w = _arg(args, kwargs, 1, "weight")
        b = _arg(args, kwargs, 2, "bias")
        if not self.is_row(x) or x.dim() < 2 or self.is_row(w) or self.is_row(b):
            self._stop()
        wp, bp = id(w) in self._params, b is not None and id(b) in self._params
        if (not wp and w.requires_grad) or (b is not None and not bp and b.requires_grad):
            self._stop()  # a trainable weight that is not a copy: see __torch_function__
        if (wp and w.dim() != 3) or (bp and b.dim() != 2):
            self._stop()
        if wp:  # (B, m, in) @ (B, in, out): row b by example b's copy of the weight
            z = torch.bmm(x.reshape(self.B, -1, x.shape[-1]), w.transpose(1, 2))
            z = z.view(*x.shape[:-1], w.shape[1])
        else:  # a frozen weight, the same for every example: per row as it is
            z = F.linear(x, w, None if bp else b)
        if wp and b is not None and not bp:
            z = z + b
        elif bp:  # (B, out) -> (B, 1, ..., out)
            z = z + b.view(self.B, *([1] * (x.dim() - 2)), b.shape[-1])
        return self._row(z)


def _getitem(watch, args, kwargs, tensors) -> bool:
    # x[:, ...]: the batch dimension whole, no tensor (advanced) index anywhere
    x, idx = args
    if len(tensors) != 1 or not watch.is_row(x):
        return False
    idx = idx if isinstance(idx, tuple) else (idx,)
    if not idx or type(idx[0]) is not slice or idx[0] != slice(None):
        return False
    for i in idx[1:]:
        if isinstance(i, slice):
            if not all(v is None or type(v) is int for v in (i.start, i.stop, i.step)):
                return False
        elif not (i is None or i is Ellipsis or type(i) is int):
            return False
    return True


def _gather(watch, args, kwargs, tensors) -> bool:
    x = _arg(args, kwargs, 0, "input")
    idx = _arg(args, kwargs, 2, "index")
    dim = _arg(args, kwargs, 1, "dim")
    if len(tensors) != 2 or not (watch.is_row(x) and watch.is_row(idx)):
        return False
    if kwargs.get("sparse_grad") or x.dim() != idx.dim():
        return False
    return _dims(dim, x.dim()) not in (None, [0])


def _unsqueeze(watch, args, kwargs, tensors) -> bool:
    x, d = args[0], _arg(args, kwargs, 1, "dim")
    return len(tensors) == 1 and _dims(d, x.dim() + 1) not in (None, [0])


def _squeeze(watch, args, kwargs, tensors) -> bool:
    # squeeze() with no dim would drop the batch of one that each example is
    dims = _dims(_arg(args, kwargs, 1, "dim"), args[0].dim())
    return len(tensors) == 1 and dims is not None and 0 not in dims


def _flatten(watch, args, kwargs, tensors) -> bool:
    x = args[0]
    start = _dims(_arg(args, kwargs, 1, "start_dim", 0), x.dim())
    return len(tensors) == 1 and start is not None and start != [0]


def _reshape(watch, args, kwargs, tensors) -> bool:
    # (-1, *rest): each example's (1, ...) becomes (1, *rest), the batch (B, *rest)
    shape = _arg(args, kwargs, 1, "shape")
    if not isinstance(shape, (tuple, list, torch.Size)):
        shape = args[1:]
    return (
        len(tensors) == 1
        and len(shape) >= 1
        and type(shape[0]) is int
        and shape[0] == -1
        and all(type(s) is int and s >= 0 for s in shape[1:])
    )


def _transpose(watch, args, kwargs, tensors) -> bool:
    x = args[0]
    dims = [_dims(_arg(args, kwargs, i, n), x.dim()) for i, n in ((1, "dim0"), (2, "dim1"))]
    return len(tensors) == 1 and None not in dims and [0] not in dims


def _permute(watch, args, kwargs, tensors) -> bool:
    x = args[0]
    dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
    dims = _dims(list(kwargs.get("dims", dims)), x.dim())
    return len(tensors) == 1 and dims is not None and dims[0] == 0


def _cat(watch, args, kwargs, tensors) -> bool:
    ts = _arg(args, kwargs, 0, "tensors")
    if not ts or len(tensors) != len(ts) or not all(watch.is_row(t) for t in ts):
        return False
    ndim = ts[0].dim()
    if any(t.dim() != ndim for t in ts):
        return False
    return _dims(_arg(args, kwargs, 1, "dim", 0), ndim) not in (None, [0])


def _dropout_off(watch, args, kwargs, tensors) -> bool:
    # F.dropout(x, p, training=False) is x; in training it draws (one stream for the
    # batch where the per-example way draws per example): refused
    return (
        len(tensors) == 1
        and _arg(args, kwargs, 2, "training", True) is False
        and not (_arg(args, kwargs, 3, "inplace", False))
    )


_STRUCTURAL = {
    _T.__getitem__: _getitem,
    torch.gather: _gather,
    _T.gather: _gather,
    torch.unsqueeze: _unsqueeze,
    _T.unsqueeze: _unsqueeze,
    torch.squeeze: _squeeze,
    _T.squeeze: _squeeze,
    torch.flatten: _flatten,
    _T.flatten: _flatten,
    torch.reshape: _reshape,
    _T.reshape: _reshape,
    _T.view: _reshape,
    torch.transpose: _transpose,
    _T.transpose: _transpose,
    torch.permute: _permute,
    _T.permute: _permute,
    torch.cat: _cat,
    F.dropout: _dropout_off,
}


def _make_known_loss(func):
    def check(watch, args, kwargs, tensors) -> bool:
        # a torch loss with reduction="none" on row tensors, by known_losses' rules; any
        # other tensor (a class weight, pos_weight) must be a constant, not a row tensor
        a_in = _arg(args, kwargs, 0, "input")
        a_tg = _arg(args, kwargs, 1, "target")
        if not (watch.is_row(a_in) and watch.is_row(a_tg)):
            return False
        if any(watch.is_row(t) for t in tensors if t is not a_in and t is not a_tg):
            return False
        return _per_example_by_definition(func, args, kwargs, a_in, a_tg)

    return check


for _f in KNOWN:  # the torch losses known_losses recognises, on its conditions
    _STRUCTURAL[_f] = _make_known_loss(_f)

# which rule a call falls under (compared with `is`); a call not listed is stopped
_LINEAR, _ELEMENT, _ALONG, _STRUCT, _META, _SIZE = (
    "linear", "elementwise", "along", "structural", "metadata", "size",
)  # fmt: skip
_KIND = {
    **{f: _STRUCT for f in _STRUCTURAL},
    **{f: _ALONG for f in _ALONG_DIM},
    **{f: _ELEMENT for f in _ELEMENTWISE},
    **{f: _META for f in _METADATA},
    _T.size: _SIZE,
    F.linear: _LINEAR,
}


# A negative verdict is remembered for this many loss functions, so that a loss outside
# the rules pays its stopped call once, not at every step (as KnownLosses does).
_REMEMBER = 16


class RowLosses:
    """Applies a user's loss to the batch when :class:`RowWatch` verifies it; else None.

    One per :class:`~tying.train.dp.DPSGD` plan or :class:`~tying.train.GhostClipping`.
    A positive verdict is never cached (a loss may branch on its inputs: every call is
    watched again); a negative one is, for at most ``_REMEMBER`` functions.

    Example:
        >>> import torch
        >>> from tying.train.row_watch import RowLosses
        >>> rows = RowLosses()
        >>> out, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
        >>> own = lambda o, t: torch.logsumexp(o, 1) - o.gather(1, t[:, None])[:, 0]
        >>> rows(own, out, y).shape                     # row b reads example b only
        torch.Size([4])
        >>> rows(lambda o, t: o.sum(1) - o.mean(), out, y) is None   # a mean over the batch
        True
    """

    def __init__(self):
        self._not: dict[tuple[int, int], object] = {}

    def known_not(self, loss_fn) -> bool:
        """True if ``loss_fn`` was already stopped (it is not tried again)."""
        return loss_key(loss_fn) in self._not

    def __call__(self, loss_fn, out, y) -> torch.Tensor | None:
        """``loss_fn(out, y)`` on the batch, ``(B, ...)``, if every call kept rows apart.

        Args:
            loss_fn: the user's loss function.
            out: the batch's output, batch first.
            y: the batch's targets, batch first.

        Returns:
            The per-example losses as ``loss_fn`` returned them, or None: the loss made
            a call outside :class:`RowWatch`'s rules, stopped before it ran; the caller
            computes the loss per example instead.
        """
        key = loss_key(loss_fn)
        if key in self._not:
            return None
        ok = (
            isinstance(out, torch.Tensor)
            and isinstance(y, torch.Tensor)
            and out.dim() >= 1
            and y.dim() >= 1
            and out.shape[0] == y.shape[0]
        )
        if not ok:  # not a batch this rule applies to: nothing learnt about loss_fn
            return None
        watch = RowWatch((out, y))
        try:
            with watch:
                got = loss_fn(out, y)
            return watch.verified(got)
        except (Stopped, Exception):  # noqa: BLE001 - an error on the batch (a shape that
            # broadcasts for (1, ...) but not for (B, ...)) is no verdict on the loss: it
            # takes the per-example way, which raises it again if it is an error there too
            pass
        if len(self._not) >= _REMEMBER:
            self._not.clear()
        self._not[key] = (loss_fn, getattr(loss_fn, "__self__", None))
        return None


def custom_nodes(root, given_ids) -> list[str]:
    """The class names of the custom ``autograd.Function`` nodes in the graph under
    ``root`` (a ``grad_fn``), in the order found, not walking past the nodes whose ids
    are in ``given_ids`` (the inputs' own history)."""
    return [type(node).__name__ for node in custom_function_nodes_under([root], given_ids)]


def custom_function_nodes_under(roots, given_ids, skip=None) -> list:
    """The custom ``autograd.Function`` nodes in the graphs under ``roots`` (``grad_fn``s),
    in the order found, not walking past the nodes whose ids are in ``given_ids``;
    ``skip(forward_cls)`` True leaves a node out (still walked through)."""
    seen, todo, found = set(given_ids), list(roots), []
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, BackwardCFunction) and not (skip and skip(node._forward_cls)):
            found.append(node)
        todo.extend(nxt for nxt, _ in node.next_functions)
    return found
