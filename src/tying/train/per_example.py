"""Per-example gradients of a model's physical parameters, built once per model (claim D10).

:class:`_PerExample` is what :func:`tying.train.dp.per_example_grads` and a
:class:`~tying.train.DPSGD` step with ``mode="vmap"`` run: the model's trainable
physical tensors swapped for substitutes, and each example's gradient on them, one of
these ways (``last_way``):

- ``"expanded"``: small models (at most :data:`EXPAND_MAX_ELEMENTS` per-example
  gradient elements) built entirely of module types tested here
  (:data:`_EXPAND_SAFE`): one vmapped forward over parameters expanded to
  ``(B, *shape)`` and one autograd pass. A known torch loss
  (:mod:`tying.train.known_losses`) is applied to the batch outside vmap, any other
  loss per example; an ``nn.Sequential`` of Linear layers and pointwise activations
  runs its forward as ``bmm`` without vmap (:func:`_direct_layers`).
- ``"expanded-watched"``: the same for small models of any other types, with every
  torch call that reads a parameter checked as it is made (:class:`_ParamWatch`); a
  call it does not know sends the model to ``"vmap-grad"`` for good. Since stop 23 the
  forward first runs on the batch without ``vmap`` (``last_forward == "rows"``) under a
  :class:`~tying.train.row_watch.RowWatch`, which lets a call run only if row b of its
  result reads example b alone; at the first other call it takes the vmapped forward.
  A loss that is not a known torch loss gets the same watch on the batch
  (``last_loss == "rows"``) before it is computed one example at a time.
- ``"vmap-grad"``: ``torch.func.vmap(grad(...))``, for any model, at any size.

Split from ``dp.py`` at stop 22 (house rule 1: under 1,000 lines), where the watched way,
the ``bmm`` forward and the batched known losses were added. What it refuses (hooks, a
renormalising or sparse embedding, batch-sized outputs and losses, and the errors that
name the layer when torch fails under ``vmap``) is in :mod:`tying.train.per_example_refusals`,
split from here the same way; those names are still importable from this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

from tying.train._batch_size_probe import refuse_batch_dependent_forward
from tying.train._loss_broadcast import BatchBroadcast
from tying.train._vetting import (
    BUFFER_FIX,  # noqa: F401 - its old address (used by per_example_refusals)
    BufferWrites,
    batch_rows,
    buffers_kept,
    callable_overrides,
    forward_key,
    func_name,
    gradless,
    params_behind,
    refuse_mixing_forward,
    refuse_parameter_hooks,  # noqa: F401 - its old address (per_example_refusals)
    tensors_in,
    unchanged,
)
from tying.train._vetting import METADATA_CALLS as _METADATA_CALLS
from tying.train._vetting import (
    compiled_wrapper as _compiled,
)
from tying.train._vetting import (
    holds_compiled as _holds_compiled,
)
from tying.train._weight_cancels import WeightCancels
from tying.train.known_losses import KnownLosses, loss_key
from tying.train.per_example_refusals import (
    _refuse_backward_hooks,
    _refuse_batch_sized_loss,
    _refuse_batch_sized_output,
    _refuse_buffer_in_place,
    _refuse_data_dependent_flow,
    _refuse_function_without_vmap,
    _refuse_in_place_renorm,
    _refuse_inference_mode,
    _refuse_recurrent_kernels,
    losses_per_example,
)
from tying.train.row_watch import RowLosses, RowWatch, Stopped

_is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _fingerprint(model: nn.Module) -> tuple[tuple, list]:
    """Everything a :class:`_PerExample` is built from, and the objects it names.

    One walk over ``named_modules(remove_duplicate=False)``: each module's path, identity
    and class (a tie swaps the class), and the identity (and ``requires_grad``) of every
    entry of its ``_parameters`` and ``_buffers``. Two equal fingerprints give the same
    parameter names, order and swap slots. The second value holds the objects whose
    ``id`` the fingerprint records: kept alive by the cache, no id can be reused by a new
    module or tensor while the fingerprint is compared against. Refuses a BatchNorm in
    training mode on the way (``.train()`` may have been called since the last step).
    """
    key, refs = [], []
    # ``functional_call(tie_weights=True)`` swapped every path of a tied tensor, and a
    # module reached twice (``Sequential(lin, act, lin)``) twice: its restore then left
    # the substituted tensor in the model, which stopped training (found in issue 19's
    # work). :class:`_PerExample` swaps each (module, attribute) pair exactly once.
    for path, mod in model.named_modules(remove_duplicate=False):
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training:
            # stop 60: .eval() is no fix for one without running statistics (refused next)
            fix = (
                "GroupNorm/LayerNorm, or call .eval() on it"
                if mod.track_running_stats
                else "GroupNorm/LayerNorm (it has no running statistics, "
                "track_running_stats=False, so in .eval() too it normalises by the batch's)"
            )
            raise ValueError(
                f"{path or '<root>'} is a {type(mod).__name__} in training mode: it mixes the "
                f"examples of a batch, so per-example gradients (and DP) do not exist; use "
                f"{fix}"
            )
        ps = tuple(
            (n, id(t), t is not None and t.requires_grad) for n, t in mod._parameters.items()
        )
        bs = tuple((n, id(t)) for n, t in mod._buffers.items())
        key.append((path, id(mod), type(mod), ps, bs))
        refs.append(mod)
        refs.extend(mod._parameters.values())
        refs.extend(mod._buffers.values())
    return tuple(key), refs


# Below this many per-example gradient elements (batch x trainable parameters) the
# per-example gradients come from one vmapped forward over the parameters expanded to
# (B, *shape) and one plain autograd pass (_PerExample._expanded); above it from
# vmap(grad(...)). Both give every example's own gradient (tested equal to a per-example
# loop on every test model, either way). The expanded way skips torch.func's grad level,
# a fixed ~0.3-0.5 ms a call (the whole step of a small model), but its forward runs one
# matrix-vector product per example where grad-in-vmap runs one matrix product for the
# batch: +6 ms on the 256-512-512-10 MLP at B=256 (102M elements, 1 thread, 160 vs 154
# ms, 2026-12-01), ~0.06 ns per element, so the two break even near 2^23 elements.
EXPAND_MAX_ELEMENTS = 2**23

# The expanded way relies on torch's batching rules for ops whose *parameters* are
# batched, and one of them is wrong: F.embedding with a batched weight and a padding_idx
# masks the padding row of the first example's copy only, so every other example's
# padding row gets a gradient (found here; tests/train/test_dp.py shows it). So it runs
# only on models built entirely of these module types, exact types (a subclass may
# override forward, and a tied module is a subclass), each tested against a per-example
# loop in float64. Any other model takes vmap(grad(...)) at any size.
_EXPAND_SAFE = frozenset(
    {
        nn.Sequential,
        nn.Linear,
        nn.Conv1d,
        nn.Conv2d,
        nn.ReLU,
        nn.Tanh,
        nn.Sigmoid,
        nn.GELU,
        nn.Flatten,
        nn.Identity,
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.LayerNorm,
        # per example by definition (groups of one sample's channels); its batching rule
        # with a batched weight and bias is tested against a per-example loop (2-D and
        # 4-D inputs, 1, 2 and C groups). Stop 20: the sweep's CNN with GroupNorm took
        # vmap(grad) at 1.10x Opacus; the expanded way runs its step 1.24x faster.
        nn.GroupNorm,
        nn.Dropout,
    }
)


def _expand_vetted(modules, keys) -> bool:
    """Whether the expanded way may run now: nothing it was not tested with is attached.

    :attr:`_PerExample.expandable` vets the module *types* once; hooks and instance
    attributes can be added at any time after, so this runs at every call (~1 µs a
    module). A forward (pre-)hook, module or global, an old-style backward hook, or a new
    instance attribute sends the call to ``vmap(grad(...))``, which runs them per example.
    """
    g = nn.modules.module
    if g._global_forward_hooks or g._global_forward_pre_hooks or g._global_backward_hooks:
        return False
    for (_, mod), k in zip(modules, keys):
        if (
            mod._forward_hooks
            or mod._forward_pre_hooks
            or mod._backward_hooks
            or mod._backward_pre_hooks
            or mod.__dict__.keys() != k
            or mod.__dict__.get("_compiled_call_impl") is not None
        ):
            return False
    return True


class _PerExample:
    """Per-example gradients over a model's trainable physical parameters, built once.

    A DP step used to rebuild the parameter and buffer maps, and ``functional_call``
    walked the model again, on every call: on a tiny model that walking cost as much
    as the arithmetic (issue 19). This object lists the swaps once, as (module,
    attribute, index) triples over a flat tuple of parameters, and writes each
    substitute straight into the module's ``_parameters``/``_buffers`` dict, which is
    the write ``functional_call`` makes (``torch.nn.utils._named_member_accessor.
    swap_tensor``), restored in a ``finally``. :meth:`fresh` says whether the model
    still has the structure it was built from (see :func:`_fingerprint`); the tensors'
    values are read at every call (``p.detach()`` shares the storage that an optimizer
    or a ``.data =`` assignment left), never cached. The loss function is handed in at
    every call, so a new one needs no rebuild.
    """

    def __init__(self, model: nn.Module):
        self.key, self._refs = _fingerprint(model)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:  # torch.func.grad and autograd.grad fail on no inputs, unclearly
            raise ValueError(
                f"{type(model).__name__} has no trainable parameter (requires_grad is False "
                f"on all {len(list(model.parameters()))}): there is no gradient to clip and "
                f"noise; set requires_grad on the parameters to train"
            )
        self.names = tuple(n for n, _ in named)
        self.params = tuple(p for _, p in named)
        self._originals = {id(p): n for n, p in named}  # read while swapped out: refused
        index = {id(p): i for i, p in enumerate(self.params)}
        buffers = [b for _, b in model.named_buffers()]
        b_index = {id(b): i for i, b in enumerate(buffers)}
        self.buffers = tuple(buffers)
        self.p_slots, self.b_slots, seen = [], [], set()
        for _, mod in model.named_modules(remove_duplicate=False):
            for name, t in mod._parameters.items():
                if t is not None and id(t) in index and (id(mod), name) not in seen:
                    seen.add((id(mod), name))
                    self.p_slots.append((mod, name, index[id(t)]))
            for name, t in mod._buffers.items():
                if t is not None and id(t) in b_index and (id(mod), name) not in seen:
                    seen.add((id(mod), name))
                    self.b_slots.append((mod, name, b_index[id(t)]))
        # the types once; hooks and instance attributes at every call (_expand_vetted)
        self.modules = list(model.named_modules())
        _refuse_in_place_renorm(self.modules)
        self._keys = [mod.__dict__.keys() - set() for _, mod in self.modules]
        self.expandable = all(
            type(m) in _EXPAND_SAFE and not callable_overrides(m) for _, m in self.modules
        )
        self.last_way: str | None = None  # "expanded", "expanded-watched" or "vmap-grad"
        # a Sequential of Linear layers and pointwise activations: the expanded way's
        # forward as batched matrix products, without vmap (see _direct_layers)
        self._direct = _direct_layers(model, self.p_slots) if self.expandable else None
        # "direct", "rows" (row-watched, stop 23) or "vmap": the expanded ways' forward
        self.last_forward: str | None = None
        self.model = model
        # a torch.compile'd model's forward run eagerly: dynamo traced the slots' source
        # check (gc.get_referrers) under vmap and crashed with InternalTorchDynamoError on
        # a Transposed tie (stop 61); vmap gains nothing from the compiled graph
        self._forward = getattr(model, "_orig_mod", model) if _compiled(model) else model
        # model.compile() in place, or a compiled child: the same dynamo crash (review 61)
        self._eager = _eager if _holds_compiled(self._forward) else contextlib.nullcontext
        self._loss_fn: LossFn | None = None
        self._batch = 0  # the batch's rows at this call: no example's output has as many
        self.fn = vmap(
            grad(self._loss_one, has_aux=True), in_dims=(None, None, 0, 0), randomness="different"
        )
        # each example's loss under its own copy of the parameters (a stride-0 expansion),
        # one vmapped function per number of inputs: flat tensor arguments, because vmap's
        # pytree matching of nested in_dims cost 13 % of a tiny model's step
        self._losses: dict[int, Callable] = {}
        # the model alone under vmap, per number of inputs, and the loss outside it:
        # batched when known_losses recognises it, else per example under its own vmap
        self._forwards: dict[tuple[int, bool], Callable] = {}
        self._loss_each: Callable | None = None
        self._known = KnownLosses()
        # loss functions whose rows on the batch equalled their per-example losses once
        # (_refuse_position_loss): not checked again, as a vetted forward is not (~50 µs)
        self._position_free: dict[tuple[int, int], object] = {}
        self._row_losses = RowLosses()  # a user's own loss on the batch, rows kept apart
        self._rows_stopped = False  # the row-watched forward stopped once: vmap from then on
        self._outputs_are_tensors = True
        self._unverified = False  # the watched way stopped once: vmap(grad(...)) from then on
        # input signatures (and training flags) whose forward was found to keep examples
        # apart before a way that runs it one example at a time (_vet_forward)
        self._vetted: set = set()
        # (signature, batch size) pairs whose rows were found not to read the batch size
        # (refuse_batch_dependent_forward): probed at every new size, not once (stop 49)
        self._sized: set = set()
        self._all_modules = [m for _, m in self.modules]
        # "batched" (a known torch loss), "rows" (a user's loss, row-verified), "per
        # example" or None (the old way)
        self.last_loss: str | None = None
        # buffers the forward writes from the batch are refused (stop 32, round 4)
        self._buffer_writes = BufferWrites(model)

    @property
    def size(self) -> int:
        """Trainable elements now: read at every call, as ``.data =`` may change a shape."""
        return sum(p.numel() for p in self.params)

    def fresh(self, model: nn.Module) -> bool:
        """True if ``model`` is the one this was built from, with the same structure."""
        return model is self.model and _fingerprint(model)[0] == self.key

    def _loss_one(self, p, bufs, xb, yb):
        with _HiddenReads(self._originals):
            out = self._output(p, bufs, xb)
            loss = self._one_loss(out, yb)
        # the output too, for the batch-loss check (_refuse_position_loss)
        return loss, (loss.detach(), _output_aux(out, loss))

    def _one_loss_watched(self, out, yb):
        """:meth:`_one_loss` refusing a read of a trainable parameter (a penalty)."""
        with _HiddenReads(self._originals):
            return self._one_loss(out, yb)

    def _output(self, p, bufs, xb, batched=False):
        """One example's output with the parameters ``p`` and buffers ``bufs`` swapped in
        (``batched``: the whole batch's, the inputs handed over as they are)."""
        saved = []
        try:
            for mod, name, i in self.p_slots:
                saved.append((mod._parameters, name, mod._parameters[name]))
                mod._parameters[name] = p[i]  # every use reads the one tensor
            for mod, name, i in self.b_slots:
                saved.append((mod._buffers, name, mod._buffers[name]))
                mod._buffers[name] = bufs[i]
            if batched:
                with self._eager():
                    return self._forward(*xb)
            with self._eager():
                out = self._forward(*(t.unsqueeze(0) for t in xb))
            if self._batch > 1:
                _refuse_batch_sized_output(out, self._batch)
            return out
        finally:
            for where, name, orig in reversed(saved):
                where[name] = orig

    def _loss_value(self, p, bufs, xb, yb):
        """One example's loss with the parameters ``p`` and buffers ``bufs`` swapped in."""
        return self._one_loss(self._output(p, bufs, xb), yb)

    def _one_loss(self, out, yb):
        """One example's loss from its output (the old way's loss, on a stored output)."""
        with WeightCancels():  # stop 59: a class weight dividing out of a one-target mean
            # stop 60: (w * ce(out, y)).sum() with w of the batch, reduced after it
            with BatchBroadcast(self._batch) as watch:
                loss = self._loss_fn(out, yb.unsqueeze(0))
        # (B,) for one example: broadcast against a tensor of the whole batch (stop 36);
        # (T,) stays legal: F.cross_entropy(out.view(-1, V), y.view(-1)) gives one loss a token
        if isinstance(loss, torch.Tensor) and loss.dim() and loss.shape[0] == self._batch > 1:
            _refuse_batch_sized_loss(loss)
        if self._batch > 1:
            watch.refuse()
        if not isinstance(loss, torch.Tensor):  # a float: refused by type, as in ghost clipping
            losses_per_example(loss, self._batch)
        return loss.sum()

    def __call__(self, loss_fn: LossFn, xs: tuple, y: torch.Tensor):
        """``(grads, losses)``: a tuple of ``(B, *param.shape)`` in :attr:`names` order, ``(B,)``."""
        _refuse_inference_mode("per-example gradients")
        _refuse_backward_hooks(self.modules, self.names, self.params)
        # a buffer written from the batch is refused before any forward writes it (a
        # forward on the batch, once per signature), and any write at every call after
        state = self._buffer_writes.before(xs, y.shape[0], "per-example gradients")
        try:
            got = self._call(loss_fn, xs, y)
        except RuntimeError as err:
            _refuse_function_without_vmap(self.modules, err)
            if self._buffer_writes.slots:
                _refuse_buffer_in_place(self.modules, err)
            # every way, not only vmap(grad(...)) (_call): a PackedSequence failed in the
            # expanded way with torch's "stack expects each tensor to be equal size", a
            # RuntimeError naming no layer (stop 57b)
            _refuse_recurrent_kernels(self.modules, err)
            _refuse_data_dependent_flow(err)
            raise
        self._buffer_writes.after(state, "per-example gradients")
        return got

    def _call(self, loss_fn: LossFn, xs: tuple, y: torch.Tensor):
        bufs = tuple(b.detach() for b in self.buffers)
        self._loss_fn = loss_fn
        self._batch = y.shape[0]
        self.last_loss = self.last_forward = None
        try:
            if (
                (self.expandable or not self._unverified)
                and y.shape[0] * self.size <= EXPAND_MAX_ELEMENTS
                and _expand_vetted(self.modules, self._keys)
            ):
                if self.expandable:
                    self.last_way = "expanded"
                    return self._expanded(bufs, xs, y)
                got = self._watched(bufs, xs, y)
                if got is not None:
                    self.last_way = "expanded-watched"
                    return got
            self.last_way = "vmap-grad"
            self._vet_forward(xs)
            try:
                grads, (losses, outs) = self.fn(tuple(p.detach() for p in self.params), bufs, xs, y)
            except RuntimeError as err:
                _refuse_recurrent_kernels(self.modules, err)
                raise
            self._refuse_position_loss(outs, y, losses)
            return grads, losses
        finally:
            self._loss_fn = None

    def _vet_forward(self, xs: tuple) -> None:
        """Refuse a forward that mixes the examples of a batch, before a way that runs it
        one example at a time (once per input signature and set of training flags; the
        batch-size probe at every batch size not seen before).

        ``vmap`` hands the forward each example as a batch of one, so a layer that reads
        the batch (``h - h.mean(0)``, a BatchNorm without running statistics) made each
        example's gradient that of another model than the one trained, with no error
        (``h - h.mean(0)`` gave the layers before it a gradient of 0). The probe is ghost
        clipping's (:func:`~tying.train._vetting.refuse_mixing_forward`). Not needed for a
        forward checked row by row (``last_forward == "rows"``), nor for a model built of
        :data:`_EXPAND_SAFE` types with nothing attached: none of them reads the batch. A
        forward that starts to mix later under the same signature (a flag read in
        ``forward``) is not probed again. A forward whose rows stay apart but read the
        batch's size or their position in it (``h / x.shape[0]``) is refused too
        (:func:`~tying.train._batch_size_probe.refuse_batch_dependent_forward`).
        """
        if self.expandable and _expand_vetted(self.modules, self._keys):
            return
        B = batch_rows(xs)
        if B is None:
            return
        key = forward_key(xs, self._all_modules)
        if key in self._vetted:
            if (key, B) not in self._sized:
                with buffers_kept(self.model), self._eager():
                    refuse_batch_dependent_forward(self._forward, xs, B, "per-example gradients")
                self._sized.add((key, B))
            return
        with buffers_kept(self.model), self._eager():
            # a forward that fails on the batch (written for one example at a time) has
            # no batched forward to differ from: no verdict, and vmap runs it as before
            # every pair of examples too (groups): vmap runs each example alone, so a
            # forward in which examples 1 and 2 read each other, or every row reads
            # h[B // 2], was accepted with each gradient that of another model (stop 42)
            done = refuse_mixing_forward(
                self._forward,
                xs,
                B,
                "per-example gradients",
                _VMAP,
                batch_may_fail=True,
                groups=True,
            )
            # rows kept apart may still read the batch's size or their position in it
            # (h / x.shape[0]): vmap runs each example alone, so they differ (stop 47).
            # At every new batch size, not once a signature: a forward whose dependence
            # shows only at some sizes (``if x.shape[0] > 64: h = h / 2``) passed the first
            # step's probe at B = 32 and then ran at B = 100 with each gradient that of
            # another model, no error (stop 49). Two forwards without gradients, about 3 %
            # of a step, at each size not seen before: a Poisson run of 1,000 steps at
            # B ~ 256 meets 87 sizes, 0.2 % of its time. The mixing probe stays once a
            # signature (2 log2 B + 4 forwards, ten times this one).
            refuse_batch_dependent_forward(self._forward, xs, B, "per-example gradients")
        if done:
            self._vetted.add(key)
            self._sized.add((key, B))

    def _expanded_params(self, B: int) -> tuple:
        """Each trainable tensor expanded to ``(B, *shape)`` (a view, one row per example)
        as a leaf of its own: the expanded ways take their gradients on these."""
        return tuple(p.detach().expand(B, *p.shape).requires_grad_() for p in self.params)

    def _watched(self, bufs, xs, y):
        """The expanded way on a model of any types, every parameter use watched.

        The expanded way's one hazard is a torch batching rule that is wrong for a
        *batched parameter* (F.embedding's padding_idx, see :data:`_EXPAND_SAFE`); the
        activations are batched in both ways, and vmap's rules for them are what
        ``vmap(grad(...))`` trusts too. So a model outside :data:`_EXPAND_SAFE` (a user's
        own ``nn.Module`` class around Linear layers, stop 22) may take it if every torch
        call that reads a parameter, or a view of one, is one of the calls the listed
        modules make (:data:`_PARAM_CALLS`), a view or a metadata read: a
        :class:`_ParamWatch` checks each call as it is made. At the first other call the
        forward is stopped, this model is sent to ``vmap(grad(...))`` from then on, and
        None is returned. None too if the model's output is not one tensor.
        """
        per = self._expanded_params(y.shape[0])
        if not self._rows_stopped:
            got = self._rows_forward(per, bufs, xs, y)
            if got is not None:
                return got
        self._vet_forward(xs)  # the forward runs one example at a time from here
        try:
            return self._expanded_batched_loss(per, bufs, xs, y, watched=True)
        except _Unverified:
            self._unverified = True
            self.last_forward = self.last_loss = None
            return None

    def _rows_forward(self, per, bufs, xs, y):
        """The watched way without ``vmap``: the forward on the batch under a
        :class:`~tying.train.row_watch.RowWatch` (stop 23).

        Each torch call the forward makes is let through only if row b of its result
        reads row b of its batched inputs only, and the expanded parameters are read by
        ``F.linear`` only, as a ``bmm`` of row b by copy b: so example b's output reads
        example b's input and parameter copy only, as under ``vmap``. At the first other
        call the forward is stopped before that call runs, this model takes the
        vmapped watched way from then on, and None is returned.
        """
        try:
            watch = RowWatch(xs, per)  # inputs of different lengths: Stopped here
            with torch.enable_grad():
                with watch:
                    out = self._output(per, bufs, xs, batched=True)
                out = watch.verified(out)  # (B, *each example's output shape)
        except (Stopped, Exception):  # noqa: BLE001 - an error on the batch is no verdict:
            # the vmapped way runs the forward as before, and raises it if it is an error there
            self._rows_stopped = True
            return None
        self.last_forward = "rows"
        return self._losses_and_grads(out.unsqueeze(1), per, y)

    def _expanded(self, bufs, xs, y):
        """Example b's loss reads only row b of each expanded parameter, so the gradient
        of the summed losses on that row is example b's own gradient."""
        per = self._expanded_params(y.shape[0])
        # a model the bmm forward does not cover (a Flatten in front, a 3-d input): the
        # forward on the batch under the row watch first (stop 23), as for any class
        if not self._rows_stopped and not self._direct_applies(xs, bufs):
            got = self._rows_forward(per, bufs, xs, y)
            if got is not None:
                return got
        # the split way (forward, then the loss) when the forward can skip vmap or the
        # loss may be a known one; else model and loss under one vmap, as before
        if self._outputs_are_tensors and (
            self._direct_applies(xs, bufs)
            or not self._known.known_not(self._loss_fn)
            or not self._row_losses.known_not(self._loss_fn)
        ):
            got = self._expanded_batched_loss(per, bufs, xs, y)
            if got is not None:
                return got
        fn = self._losses.get(len(xs))
        if fn is None:
            n_p, n_b = len(per), len(bufs)

            def flat(*args):
                p, b = args[:n_p], args[n_p : n_p + n_b]
                out = self._output(p, b, args[n_p + n_b : -1])
                loss = self._one_loss(out, args[-1])
                return loss, _output_aux(out, loss)  # the output: _refuse_position_loss

            dims = (0,) * n_p + (None,) * n_b + (0,) * (len(xs) + 1)
            fn = self._losses[len(xs)] = vmap(flat, in_dims=dims, randomness="different")
        with torch.enable_grad():  # grad() enables it itself; autograd.grad needs it on
            losses, outs = fn(*per, *bufs, *xs, y)  # (B,), (B, 1, ...)
            grads = torch.autograd.grad(
                losses.sum(), per, allow_unused=True, materialize_grads=True
            )
        self._refuse_position_loss(outs, y, losses.detach())
        return grads, losses.detach()

    def _expanded_batched_loss(self, per, bufs, xs, y, watched=False):
        """The expanded way with the model alone under ``vmap`` and the loss outside.

        The outputs come from one vmapped forward (each example's output reads only its
        own row of the parameters, as before). A loss that :mod:`~tying.train.known_losses`
        recognises as per-example by definition is then applied to the batch (~10 µs
        where cross-entropy under ``vmap`` took ~140, stop 20); any other loss is applied
        to each example's output alone under a second ``vmap``, as before. None if the
        model's output is not one tensor (the caller then takes the old way, which hands
        the loss whatever the model returns).
        """
        fwd = self._forwards.get((len(xs), watched))
        if fwd is None:
            n_p, n_b = len(per), len(bufs)

            def flat(*args):
                p, b, x = args[:n_p], args[n_p : n_p + n_b], args[n_p + n_b :]
                if watched:
                    watch = _ParamWatch(p, self._originals)
                    with watch:
                        out = self._output(p, b, x)
                    if watch.stopped:  # stopped, and the model caught it: still stopped
                        raise _Unverified
                else:
                    out = self._output(p, b, x)
                if not isinstance(out, torch.Tensor):
                    raise _NotATensor
                return out

            dims = (0,) * n_p + (None,) * n_b + (0,) * len(xs)
            fwd = vmap(flat, in_dims=dims, randomness="different")
            self._forwards[(len(xs), watched)] = fwd
        with torch.enable_grad():
            if self._direct_applies(xs, bufs):
                self.last_forward = "direct"
                out = self._direct_forward(per, xs[0]).unsqueeze(1)  # (B, 1, out)
            else:
                self.last_forward = "vmap"
                try:
                    out = fwd(*per, *bufs, *xs)  # (B, *each example's output shape)
                except _NotATensor:
                    if watched:  # the caller takes vmap(grad(...)), not the old way
                        raise _Unverified from None
                    self._outputs_are_tensors = False
                    return None
        return self._losses_and_grads(out, per, y)

    def _losses_and_grads(self, out, per, y):
        """Each example's loss from the outputs ``(B, 1, ...)`` and the gradients on the
        expanded parameters ``per``: a known loss or a row-verified one on the batch,
        any other per example under ``vmap``."""
        B = y.shape[0]
        with torch.enable_grad():
            losses, how = None, "batched"
            if out.dim() >= 2 and out.shape[1] == 1:  # each example's output is (1, ...)
                losses = self._known(self._loss_fn, out.select(1, 0), y)  # (B, ...) or None
                # (None at once for a loss found unknown before: it is not called again)
                if losses is None:  # a user's own loss, each call checked to keep rows apart
                    losses, how = self._row_losses(self._loss_fn, out.select(1, 0), y), "rows"
            if losses is None:
                self.last_loss = "per example"
                if self._loss_each is None:
                    self._loss_each = vmap(self._one_loss_watched, randomness="different")
                losses = self._loss_each(out, y)  # (B,)
                self._refuse_position_loss(out, y, losses.detach())
            else:
                self.last_loss = how
                losses = losses_per_example(losses, B)  # ghost clipping's rule too (stop 54)
            grads = torch.autograd.grad(
                losses.sum(), per, allow_unused=True, materialize_grads=True
            )
        return grads, losses.detach()

    def _refuse_position_loss(self, out, y: torch.Tensor, losses: torch.Tensor) -> None:
        """Refuse a loss whose per-example values differ from its rows on the batch (stop 36).

        A loss computed one example at a time sees a batch of one: position 0, size 1. A
        loss that reads an example's position or the batch size (weights from
        ``torch.arange(len(y))``, a division by ``y.shape[0]``) then gave every example
        another loss than the batch's, with no error (0.78 off the batch's per-example
        gradients with position weights, 5x with a division by the batch size at B=6),
        and another than ghost clipping's, which applies the loss to the batch. Here the
        loss is applied once more, without gradients, to the batch of the outputs the
        per-example forwards made (``out``: ``(B, 1, ...)``), and its rows (summed per
        example) must equal the per-example ``losses`` (:func:`~tying.train._vetting.
        unchanged`'s tolerance). No verdict, and nothing refused, when the output is not
        tensors of the form ``(B, 1, ...)`` (one level of tuple/list/dict), the loss
        fails on the batch or returns one number (``reduction=
        "mean"``: nothing per example to compare), two calls on the batch disagree (a
        loss that draws random numbers; the random state is put back either way), or a
        batch of copies of the example that differs gives every copy its loss alone (a
        loss that mixes examples by broadcasting, whose per-example form is the one
        meant and is kept, as before). A loss
        function that passed once (at two examples or more) is not checked again, as a
        vetted forward is not: one that starts to read positions later is not caught.
        """
        B = y.shape[0]
        key = loss_key(self._loss_fn)
        if key in self._position_free:
            return
        batch = _batch_form(out, B) if B > 1 else None  # (B, *each example's output shape)
        if batch is None:
            return
        lead = tree_flatten(batch)[0][0]
        devices = [lead.device.index or 0] if lead.device.type == "cuda" else []
        # one forked random state for both calls: a loss that draws random numbers draws
        # other ones the second time (no verdict), and the step's own draws are as before
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            first = self._batch_loss_rows(batch, y)
            if first is None or first.shape != losses.shape:
                return
            if bool(unchanged(first, losses.to(first.dtype)).all()):
                if len(self._position_free) >= 16:
                    self._position_free.clear()
                # the function kept alive: its id is not reused while remembered
                fn = self._loss_fn
                self._position_free[key] = (fn, getattr(fn, "__self__", None))
                return
            again = self._batch_loss_rows(batch, y)
            if again is None or not bool(unchanged(first, again).all()):
                return  # a loss that draws random numbers: no verdict
            diff = (first - losses.to(first.dtype)).abs().nan_to_num(nan=float("inf"))
            worst = int(diff.argmax())
            # a batch of B copies of that example: a loss that mixes examples by
            # broadcasting (its rows read the others' targets) gives every copy the
            # example's own loss, which is what each example alone computes (legal under
            # per-example gradients, stop 30); one reading positions or B does not
            copies = self._batch_loss_rows(_copies(batch, worst, B), _copies(y, worst, B))
            if copies is None or bool(unchanged(losses[worst].expand(B), copies).all()):
                return
        raise ValueError(
            f"loss_fn gives example {worst} the loss {float(losses[worst]):.6g} when applied "
            f"to it alone but {float(first[worst]):.6g} as row {worst} of the whole batch: it "
            f"reads an example's position or the batch size (torch.arange(len(y)), "
            f"y.shape[0] as a count, a division by the batch size). Per-example gradients "
            f"apply the loss to each example alone (position 0 of a batch of one), so every "
            f"example would get another gradient than the batch gives it (and than "
            f"mode='ghost' gives it). Pass per-example weights in y (e.g. y = torch.stack([target, "
            f"w], 1), split inside loss_fn); drop a division by the batch size (the DP step "
            f"already divides the clipped sum by the expected batch size)"
        )

    def _batch_loss_rows(self, batch: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """``loss_fn`` on the whole batch's outputs, summed per example (``(B,)``), or None
        when it has no rows to compare (fails on the batch, one number, another layout)."""
        B = y.shape[0]
        try:
            whole = self._loss_fn(batch, y)
        except Exception:  # noqa: BLE001 - a loss written for one example: no verdict
            return None
        if not isinstance(whole, torch.Tensor) or whole.dim() == 0 or whole.shape[0] != B:
            return None
        if not (whole.is_floating_point() or whole.is_complex()):
            return None
        return whole.reshape(B, -1).sum(1)

    def _direct_applies(self, xs, bufs) -> bool:
        """Whether :meth:`_direct_forward` runs this call: a :func:`_direct_layers` model
        on one floating (B, features) input."""
        return (
            self._direct is not None
            and len(xs) == 1
            and xs[0].dim() == 2
            and xs[0].is_floating_point()
            and not bufs
        )

    def _direct_forward(self, per, x):
        """The expanded way's forward of a :func:`_direct_layers` model, as matrix products.

        Row b of each Linear's output reads row b of its input and the b-th copy of its
        weight and bias only (one ``bmm`` of (B, 1, in) by (B, in, out)); the pointwise
        activations act per element. So example b's output reads example b's copy of the
        parameters only, as under vmap, and the gradient on that copy is its own. vmap
        over the same model costs ~85 µs a step of a Linear 16->10 (stop 20), this ~15.
        """
        h = x  # (B, in)
        for mod, wi, bi in self._direct:
            if type(mod) is not nn.Linear:
                h = mod(h)  # a pointwise activation, on the batch
                continue
            if wi is not None:  # (B, 1, in) @ (B, in, out) -> (B, out)
                z = torch.bmm(h.unsqueeze(1), per[wi].transpose(1, 2)).squeeze(1)
            else:  # a frozen weight: the same for every example
                z = F.linear(h, mod.weight)
            if bi is not None:
                z = z + per[bi]
            elif mod.bias is not None:
                z = z + mod.bias
            h = z
        return h


_VMAP = (
    " (mode='vmap' takes each example's gradient of the model on that example alone, a "
    "batch of one, which is not the model trained on batches)"
)

# Pointwise activations: each output element reads the input element at its place only,
# so on a (B, features) batch each row is its example's own (exact types only, as for
# _EXPAND_SAFE: a subclass may override forward).
_DIRECT_POINTWISE = frozenset({nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.Identity})


def _direct_layers(model: nn.Module, p_slots) -> list | None:
    """``[(module, weight index, bias index)]`` of an exact ``nn.Sequential`` of exact
    ``nn.Linear`` and :data:`_DIRECT_POINTWISE` modules, else None.

    The indices point into the trainable parameters (None: frozen or absent). A module
    listed twice (``Sequential(lin, act, lin)``) or a Parameter shared by two Linears
    maps to one index, so both uses add into that copy's gradient, as under vmap.
    """
    if type(model) is not nn.Sequential:
        return None
    slot = {(id(mod), name): i for mod, name, i in p_slots}
    layers = []
    for mod in model._modules.values():
        if type(mod) is nn.Linear:
            layers.append((mod, slot.get((id(mod), "weight")), slot.get((id(mod), "bias"))))
        elif type(mod) in _DIRECT_POINTWISE:
            layers.append((mod, None, None))
        else:
            return None
    return layers


def _eager():
    """Every compiled module run eagerly (review 61: a ``Transposed`` tie under
    ``model.compile()`` or in a compiled child crashed under vmap with dynamo's errors, as
    the ``torch.compile(model)`` wrapper did before stop 61)."""
    stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
    if stance is None:
        return torch._dynamo.config.patch(disable=True)
    return stance("force_eager")


def _output_aux(out, loss: torch.Tensor):
    """One example's output, detached, for :meth:`_PerExample._refuse_position_loss` (vmap
    stacks each tensor to ``(B, 1, ...)``): a tensor, or a tuple/list/dict of tensors as
    the forward returned it; an empty tensor for anything else (vmap returns tensors
    only), on which no check runs."""
    leaves, spec = tree_flatten(out)
    if leaves and all(isinstance(t, torch.Tensor) for t in leaves):
        return tree_unflatten([t.detach() for t in leaves], spec)
    return loss.detach().new_zeros(0)


def _copies(tree, i: int, B: int):
    """Each tensor of ``tree`` with its row ``i`` repeated ``B`` times."""
    leaves, spec = tree_flatten(tree)
    return tree_unflatten([t[i : i + 1].expand(B, *t.shape[1:]) for t in leaves], spec)


def _batch_form(out, B: int):
    """The batch's output from the per-example outputs vmap stacked (each tensor ``(B, 1,
    ...)`` -> ``(B, ...)``), or None when a tensor lacks that form (an output squeezed to
    0-d, the placeholder of :func:`_output_aux`)."""
    leaves, spec = tree_flatten(out)
    if not leaves or not all(
        isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[:2] == (B, 1) for t in leaves
    ):
        return None
    return tree_unflatten([t.detach().select(1, 0) for t in leaves], spec)


class _NotATensor(Exception):
    """The model's output is not one tensor: the loss gets it under the old way."""


class _Unverified(BaseException):
    """The watched way met a parameter use it does not know (a ``BaseException``, so that
    a ``try/except Exception`` in the model cannot swallow it)."""


# The calls the modules of _EXPAND_SAFE make with their parameters, each tested with
# batched parameters against a per-example loop there (tests/train/test_dp.py).
_PARAM_CALLS = frozenset({F.linear, F.conv1d, F.conv2d, F.layer_norm, F.group_norm})
# Calls that only re-arrange a parameter (its result is watched in turn), or read its
# metadata; vmap's rules for them move the batch dimension and nothing else.
_T = torch.Tensor
_VIEW_CALLS = frozenset(
    {
        _T.t, torch.t, _T.transpose, torch.transpose, _T.permute, torch.permute,
        _T.view, _T.reshape, torch.reshape, _T.unsqueeze, torch.unsqueeze,
        _T.squeeze, torch.squeeze, _T.flatten, torch.flatten,
        _T.T.__get__, _T.mT.__get__,
    }
)  # fmt: skip


def _reads(args, tracked: set[int]) -> bool:
    return any(id(t) in tracked for t in tensors_in(args, {}))


class _HiddenReads(TorchFunctionMode):
    """Refuses a torch call that reads one of the model's own trainable parameters while
    per-example copies of them are swapped in (or in the loss).

    Every registered slot of a trainable parameter then holds its per-example copy, so
    the parameter object itself is reachable only from where the swap cannot reach: a
    plain list or dict attribute, a closure, a global, or the loss function (a penalty
    on a weight). Its gradient through that use would be missing from every example's
    gradient: stop 23 measured per-example gradients 1.36 off a loop, with no error, for
    a model that also read its weight through a list attribute.
    """

    def __init__(self, names: dict[int, str]):
        super().__init__()
        self.names = names

    def __torch_function__(self, func, types, args=(), kwargs=None):
        _refuse_hidden_read(func, args, kwargs or {}, self.names)
        return func(*args, **kwargs or {})


def _refuse_hidden_read(func, args, kwargs, names: dict[int, str]) -> None:
    """Refuse a call (made inside the per-example transform) that reads one of the model's
    trainable parameters, or any other tensor that needs a gradient and is not one of
    the transform's own (a view or slice of a parameter made before the step, a
    learnable tensor kept outside the modules): its gradient would be dropped."""
    if func in _METADATA_CALLS:
        return
    for t in tensors_in(args, kwargs):
        hidden = id(t) in names
        if not hidden and not (t.requires_grad and not _is_wrapped(t)):
            continue
        if gradless(func):  # no gradient, no example's share dropped: a Scaled tie read
            return  # once outside the step was refused at B = 1 (stop 60)
        if hidden:
            raise ValueError(
                f"per-example gradients: trainable parameter {names[id(t)]} is read by "
                f"{func_name(func)} where per-example copies cannot be swapped in: it is "
                f"held outside the modules' registered parameters (a plain list or dict "
                f"attribute, a closure, a global) or read by the loss function (a penalty "
                f"on a weight), so this use's share of every example's gradient would be "
                f"missing. Register it (an nn.Parameter attribute, nn.ParameterList/"
                f"ParameterDict) and read it through the module, or move a penalty to the "
                f"optimizer (weight_decay)"
            )
        behind = [names[i] for i in params_behind(t, names)]
        what = (
            f"a tensor derived from trainable parameter(s) {', '.join(behind)} before "
            f"the step (a view, slice or product of them kept on the model or in a "
            f"closure)"
            if behind
            else "a tensor that requires grad but is no parameter of the model"
        )
        raise ValueError(
            f"per-example gradients: {what} is read by {func_name(func)}; per-example "
            f"copies are swapped into the modules' registered parameters only, so its "
            f"share of every example's gradient would be missing. Derive it inside "
            f"forward (e.g. self.lin.weight.t() there), register it as a parameter, or "
            f"detach it if it is not to be trained"
        )


class _ParamWatch(TorchFunctionMode):
    """Lets a forward read its parameters only through :data:`_PARAM_CALLS`, views and
    metadata; stops it at any other call that reads one (``stopped``)."""

    def __init__(self, params, originals: dict[int, str]):
        super().__init__()
        self.tracked = {id(p) for p in params}
        self._alive = list(params)  # no tracked id is reused while this watches
        self.stopped = False
        self.originals = originals  # the model's own trainable parameters: never read here

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.stopped:
            raise _Unverified
        _refuse_hidden_read(func, args, kwargs, self.originals)
        if not (_reads(args, self.tracked) or _reads(kwargs.values(), self.tracked)):
            return func(*args, **kwargs)
        if func in _PARAM_CALLS or func in _METADATA_CALLS:
            return func(*args, **kwargs)
        if func in _VIEW_CALLS:
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                self.tracked.add(id(out))
                self._alive.append(out)
            return out
        self.stopped = True
        raise _Unverified
