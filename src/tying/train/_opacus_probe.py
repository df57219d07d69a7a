"""The probes :func:`~tying.train.opacus_hooks.grad_sample_module` runs at each forward of
the wrapped model and at the start of its backward (split from ``opacus_hooks``, stop 57,
house rule 1): a custom ``autograd.Function`` that mixes examples (stop 52), one in the
loss (stop 53), a loss whose reduction over the batch is not the ``loss_reduction``
the wrapper was given (stop 57), and a torch mean whose divisor the whole batch sets
(a class weight, unevenly kept targets; stop 59, :mod:`~tying.train._loss_divisor`).
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch import nn

from tying.train._loss_divisor import (
    class_weighted,
    could_be_even,
    kept_counts,
    loss_input_chain,
    mean_nll_nodes,
    nearest_outputs,
    output_class_dim,
    reads_one_example,
    uneven_message,
    weighted_message,
)
from tying.train._loss_reduction import _input_shape, loss_batch_reduction, seeded_with_one
from tying.train._masked_mean import (
    entries_could_be_even,
    kept_entries,
    masked_mean_message,
    masked_mean_nodes,
)
from tying.train._vetting import tensors_in
from tying.train.backward_probe import (
    backward_roots,
    custom_function_nodes,
    loss_function_nodes,
    refuse_mixing_backward_at,
)


class _BackwardProbe:
    """Refuse, after the forward and before any backward, a custom ``autograd.Function``
    whose backward mixes the examples of a batch (stop 52).

    Opacus' hooks take example b's per-sample gradient from row b of each layer's output
    gradient; an identity Function whose backward divides by the gradient's norm over
    the batch (``g / g.norm()``) made those rows no example's own: per-sample gradients
    0.84 off a per-example loop at B = 5, no error. The forward probes cannot see it
    (the forward is row by row). At every forward whose graph holds a custom Function
    (its walk: ~0.02 ms on a small model), a surrogate loss (each output row against a
    fixed random row) runs three backwards on that same graph, Opacus' hooks off
    (:func:`~tying.train.backward_probe.refuse_mixing_backward_at`); the graph is kept
    for the caller's backward. On a refusal the activations and forward counters
    Opacus recorded in this forward are taken back, so the module is as it was before
    it (the forward's buffer writes aside).
    """

    def __init__(self, gsm, model: nn.Module):
        self.gsm, self.model = gsm, model
        self._state: tuple = ((), ())

    def _on(self) -> bool:
        return self.gsm.hooks_enabled and torch.is_grad_enabled()

    def before(self, module, args) -> None:
        if not self._on():
            return
        # what Opacus' hooks record in a forward, to take it back on a refusal
        self._state = (
            [_grad_sample_record(p) for p in self.model.parameters()],
            [(m, len(m.__dict__.get("activations") or ())) for m in self.model.modules()],
        )

    def after(self, module, args, kwargs, output) -> None:
        if not self._on():
            return
        given = list(tensors_in(args, kwargs))
        # batch first (Opacus' batch_first=True): the first input's rows are the examples
        rows = [t.shape[0] for t in given if t.dim()]
        B = rows[0] if rows else 0
        if B < 2:
            return
        outs = [
            t
            for t in tensors_in((output,), {})
            if t.requires_grad and t.is_floating_point() and t.dim() and t.shape[0] == B
        ]
        self._watch_loss(outs, B)
        nodes = custom_function_nodes(outs, given)
        if not nodes:
            return
        gen = torch.Generator().manual_seed(0)  # the global random state is not drawn from
        losses = sum(
            (t * torch.randn(t.shape, generator=gen).to(t)).flatten(1).sum(1) for t in outs
        )  # (B,)
        inputs = [p for p in self.model.parameters() if p.requires_grad]
        if not inputs:
            return
        self.gsm.disable_hooks()
        try:
            with warnings.catch_warnings():  # torch's note on Opacus' hook: the backward's own
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                refuse_mixing_backward_at(losses, nodes, inputs, "grad_sample_module", _MIXING_FIX)
        except BaseException:  # a refusal, or a hook's own error in the probe's backward
            self._take_back()
            raise
        finally:
            self.gsm.enable_hooks()

    def _watch_loss(self, outs, batch: int) -> None:
        """At the backward, refuse a custom Function in the loss built from ``outs``
        (stop 53): the forward's probe ends at the model's outputs, and Opacus' hooks read
        each layer's gradient as the loss's backward hands it down. A loss that divided
        its gradient by the batch's norm gave per-sample gradients 0.69 off the loop, no
        error. Such a Function's backward has run before the outputs' gradient exists and
        its graph may be freed, so it cannot be probed as the model's are: it is refused
        by name, before any parameter's gradient is written."""
        state, stops = self._state, [t.grad_fn for t in outs]
        # the walk's verdict for the running backward (its graph task, unique per
        # backward): every output's hook saw the same loss graph and walked all of it,
        # k walks for k outputs (stop 54: 4 outputs, 4x the 1-output walk's time)
        memo: dict[int, list] = {}

        def check(grad, made_by=None, output=None):
            if not self.gsm.hooks_enabled:  # a probe's own backward, or Opacus' off
                return None
            task = _graph_task()
            seen = memo.get(task) if task >= 0 else None
            if seen is None:
                roots = backward_roots() or []  # one stack walk for both checks
                seen = (
                    loss_function_nodes(stops, roots),
                    loss_batch_reduction(batch, roots),
                    mean_nll_nodes(roots),
                    # the outputs each masked mean reaches: one walk per backward, not
                    # one per output's hook
                    [(n, nearest_outputs(n, stops)) for n in masked_mean_nodes(roots, stops)],
                )
                memo.clear()  # one backward's verdict at a time: nothing kept past it
                if task >= 0:
                    memo[task] = seen
            nodes, reduced, nll, masked = seen
            if nodes:
                self._take_back(state)
                names = ", ".join(dict.fromkeys(n._forward_cls.__qualname__ for n in nodes))
                raise ValueError(
                    f"grad_sample_module: the loss applies the custom autograd.Function "
                    f"{names} to the model's output, in the loss: Opacus' hooks take each "
                    f"example's gradient from the row its backward hands down, which they "
                    f"cannot check (a backward that sums, averages or normalises over the "
                    f"batch gives per-sample gradients that are no example's own, with no "
                    f"error). Write the loss with torch operations, or use "
                    f"tying.train.DPSGD(mode='ghost'), which probes such a backward, or "
                    f"mode='vmap', which runs each example's backward alone"
                )
            declared = self.gsm.loss_reduction
            # stop 59: a torch mean whose divisor the whole batch sets (class weights,
            # ignore_index, masked rows), wrong under either loss_reduction; read before
            # the reduction's own check, whose advice (.mean()) would be refused here next
            for node in nll:
                if made_by is not None and reads_one_example(node, made_by):
                    continue  # one example's own mean (a per-example loop; review 59)
                if class_weighted(node):
                    self._take_back(state)
                    raise ValueError(weighted_message(declared, node, batch))
                shape = _input_shape(node)
                # only an output the loss reads directly (logits, not a hidden state whose
                # rows reach the kept targets of later positions through attention)
                direct = made_by is not None and id(made_by) in loss_input_chain(node)
                where = output_class_dim(node, made_by) if direct else None
                # or one it reaches first through ops the chain does not know (stop 62:
                # out.gather, stack(out.unbind(1), 1), roll, cat of slices: read by shape)
                read = direct or (
                    made_by is not None and id(made_by) in nearest_outputs(node, stops)
                )
                counts = (
                    kept_counts(grad, shape[1], batch, shape, where)
                    if read and shape and len(shape) > 1
                    else None
                )
                if (
                    counts is not None
                    and bool(counts.min() != counts.max())
                    and not could_be_even(grad, output() if output else None, counts, shape, where)
                ):
                    self._take_back(state)
                    raise ValueError(uneven_message(declared, node, counts))
            # stop 62: the same for any mean over entries a mask kept (mse over out[mask])
            for node, reached in masked:
                if made_by is None or id(made_by) not in reached:
                    continue
                if reads_one_example(node, made_by):
                    continue
                # by entry against the number the mask kept (review 62: a kept entry with
                # a zero gradient refused an even mask; a mask over single entries of a
                # (B, T, D) output went unseen)
                even = entries_could_be_even(node, stops, grad, batch)
                if even is True:
                    continue
                counts = kept_entries(grad, batch)  # rows: what the message names
                if even is False and (counts is None or bool(counts.min() == counts.max())):
                    counts = (grad != 0).reshape(batch, -1).sum(1)  # single entries kept
                if counts is not None and (
                    even is False or (even is None and bool(counts.min() != counts.max()))
                ):
                    self._take_back(state)
                    raise ValueError(masked_mean_message(declared, node, counts))
            # a seed other than 1 (loss.backward(torch.tensor(1 / B))) scales the loss by
            # hand; read only on a mismatch, so the usual backward pays no device sync
            if reduced is not None and reduced[0] != declared and seeded_with_one():
                self._take_back(state)
                raise ValueError(_reduction_message(declared, reduced, batch))
            return None

        def hook_for(t):
            # a weak reference: the logits are read only on a refusal, and never kept alive
            made_by, output = t.grad_fn, weakref.ref(t)
            return lambda grad: check(grad, made_by, output)

        for t in outs:
            t.register_hook(hook_for(t))

    def _take_back(self, state=None) -> None:
        records, activations = self._state if state is None else state
        for record in records:
            _restore_grad_sample(*record)
        for m, n in activations:
            acts = m.__dict__.get("activations")
            if acts is not None:
                del acts[n:]


def _grad_sample_record(p: torch.Tensor) -> tuple:
    """What Opacus' accumulation (and a tied use's hook, which runs on the model's output
    before any refusal there) may write on ``p`` in a forward and its backward."""
    current = p.__dict__.get("_current_grad_sample")
    done = p.__dict__.get("grad_sample")
    return (
        p,
        getattr(p, "_forward_counter", None),
        None if current is None else current.clone(),
        done,
        len(done) if isinstance(done, list) else None,
    )


def _restore_grad_sample(p, counter, current, done, listed) -> None:
    """Put back a :func:`_grad_sample_record` (stop 57: a tied output layer's hook had
    written its use into ``_current_grad_sample`` before the loss was refused, and the next
    backward added it to its own: per-sample gradients 0.11 off the loop, no error)."""
    if counter is not None:
        p._forward_counter = counter
    if current is None:
        p.__dict__.pop("_current_grad_sample", None)
    else:
        p._current_grad_sample = current
    if "grad_sample" in p.__dict__ or done is not None:
        p.grad_sample = done
    if listed is not None:
        del done[listed:]


def _graph_task() -> int:
    """The running backward's graph task id (unique per backward), -1 if unknown."""
    get = getattr(torch._C, "_current_graph_task_id", None)
    return -1 if get is None else int(get())


_MIXING_FIX = (
    "Make the Function's backward act per example (no sum, mean or norm over the batch "
    "dimension), or use tying.train.DPSGD(mode='vmap'), which runs each example's backward "
    "alone"
)


def _reduction_message(declared: str, reduced: tuple[str, str], batch: int) -> str:
    """Stop 57: a loss reduced over the batch otherwise than ``loss_reduction`` says."""
    kind, what = reduced
    off = f"{batch}x" if declared == "mean" else f"1/{batch} of"
    return (
        f"grad_sample_module(loss_reduction={declared!r}): the loss is a {kind} over the "
        f"batch ({what}), so Opacus' hooks would give each of the {batch} examples {off} "
        f"its own gradient (loss_reduction={declared!r} "
        + (
            "multiplies every row by the batch size to undo a mean"
            if declared == "mean"
            else "takes the rows as they are"
        )
        + f"), and clipping would bound a scaled copy, with no error. Wrap with "
        f"loss_reduction={kind!r} (and give the DPOptimizer/PrivacyEngine the same), or "
        f"reduce the loss with .{declared}() (a loss scaled by hand, loss.sum() / B, is "
        f"taken as written)"
    )
