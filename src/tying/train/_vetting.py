"""What per-example gradients vet in a model before each call: hooks and overrides.

Both ways to per-example gradients (:mod:`tying.train.dp`'s ``vmap`` and
:mod:`tying.train.ghost`) compute what a module *type* does, not what the module
object does at run time. A method shadowed on the instance (``lin.forward = f``), a
forward hook that returns a new output, or a gradient hook on a parameter changes the
latter without changing the type, and can be added after the first step; so these
checks run at every call, over a list of modules made once (~1 µs a module).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

_T = torch.Tensor
# torch calls that read a tensor's metadata only, never its values
METADATA_CALLS = frozenset(
    {
        _T.dim, _T.size, _T.__len__, _T.shape.__get__, _T.ndim.__get__, _T.dtype.__get__,
        _T.device.__get__, _T.requires_grad.__get__, _T.is_floating_point, _T.numel,
        _T.nelement, _T.stride, _T.is_contiguous, _T.element_size, _T.is_complex,
        _T.is_cuda.__get__, _T.layout.__get__, _T.is_sparse.__get__, _T.is_meta.__get__,
        _T.itemsize.__get__, _T.nbytes.__get__, _T.data_ptr, _T._version.__get__,
        _T.is_inference, _T.storage_offset,
    }
)  # fmt: skip

# Calls whose result carries no gradient back to what they read, and a hook on a tensor
# (which adds no use of it). The parameter-read guards (per_example, ghost, opacus_hooks)
# let them through, as any call under torch.no_grad(): tying.core's check that a computed
# slot's last value was not written makes them (stop 60).
GRADLESS_CALLS = frozenset(
    {
        _T.detach, torch.detach, _T.data.__get__, _T.untyped_storage, _T._base.__get__,
        _T.register_hook,
    }
)  # fmt: skip


def gradless(func) -> bool:
    """Whether ``func`` makes no gradient here: a :data:`GRADLESS_CALLS` call, or any call
    under ``torch.no_grad()`` (tying.core's check of a computed slot's last value)."""
    return func in GRADLESS_CALLS or not torch.is_grad_enabled()


def tensors_in(args, kwargs):
    """The tensors among a call's arguments (recursing into lists, tuples and dicts)."""
    todo = [args, kwargs.values()] if kwargs else [args]
    while todo:
        for a in todo.pop():
            if isinstance(a, torch.Tensor):
                yield a
            elif isinstance(a, (list, tuple)):
                todo.append(a)
            elif isinstance(a, dict):
                todo.append(a.values())


def params_behind(t: torch.Tensor, names: dict[int, str]) -> list[int]:
    """Ids (keys of ``names``) of the parameters ``t``'s autograd graph reaches."""
    found, seen, todo = [], set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        var = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf
        if var is not None and id(var) in names:
            found.append(id(var))
        todo.extend(nxt for nxt, _ in node.next_functions)
    return found


def func_name(func) -> str:
    """A torch function's name for an error message (``TensorBase.matmul``, ``linear``)."""
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", str(func))


def callable_overrides(mod: nn.Module) -> list[str]:
    """Instance attributes of ``mod`` that shadow a method of its class.

    ``mod.forward = f``, ``mod._conv_forward = f``, and ``mod.compile()``'s
    ``_compiled_call_impl``: code the module's type was not tested with.
    """
    cls = type(mod)
    found = [k for k, v in vars(mod).items() if callable(v) and callable(getattr(cls, k, None))]
    if compiled_in_place(mod):
        found.append("_compiled_call_impl")
    return found


def undo_overrides(mod: nn.Module, path: str) -> str:
    """Code that removes what :func:`callable_overrides` finds on ``mod`` (at ``path`` in
    the model), one statement each (stop 62: the refusals advised ``del module.forward``
    for ``mod.compile()``'s ``_compiled_call_impl``, which raised an AttributeError).

    Example:
        >>> from torch import nn
        >>> lin = nn.Linear(2, 2)
        >>> lin.forward = lin.forward
        >>> undo_overrides(lin, "head")
        "del model.get_submodule('head').forward"
    """
    at = f"model.get_submodule({path!r})" if path else "model"
    return "; ".join(
        f"{at}._compiled_call_impl = None (undoes its .compile())"
        if name == "_compiled_call_impl"
        else f"del {at}.{name}"
        for name in callable_overrides(mod)
    )


def refuse_parameter_hooks(names, params) -> None:
    """Refuse a gradient hook on a trainable parameter (``Tensor.register_hook``).

    Per-example gradients are taken on substitutes of the parameters (``vmap``) or
    from activations (ghost clipping), so the hook never runs and whatever it changes
    would be missing from every example's gradient (3.5 off a per-example loop on a
    6-8-3 MLP whose hook tripled a gradient, found in stop 18).
    """
    for name, p in zip(names, params):
        if p._backward_hooks:
            raise ValueError(
                f"parameter {name} has a gradient hook (Tensor.register_hook): per-example "
                f"gradients do not run it, so its change would be missing from every "
                f"example's gradient; remove it (handle.remove()) and apply its change to "
                f"the model instead"
            )


# -- the forward's rows are its examples (checked once per input signature) -------------
#
# Per-example gradients are each example's gradient only if the forward keeps examples
# apart. ``mode="vmap"`` runs it one example at a time (a batch of one), so a forward that
# mixes the batch (a BatchNorm using batch statistics, ``h - h.mean(0)``) got each
# example's gradient of a model other than the one trained, with no error; ghost clipping
# took the batch's rows for examples. Both refuse it through :func:`refuse_mixing_forward`.


def batch_rows(xs) -> int | None:
    """The batch size ``B`` if every tensor input has first dimension ``B >= 2``, else None
    (one example, or inputs of different lengths: no probe can be made)."""
    rows = [t.shape[0] for t in xs if isinstance(t, torch.Tensor) and t.dim() >= 1]
    if not rows or min(rows) < 2 or len(set(rows)) != 1:
        return None
    return rows[0]


def forward_key(xs, modules) -> tuple:
    """What a forward's vetting holds for: the inputs' dtypes and shapes past the batch, and
    every module's training flag (``.train()``/``.eval()`` changes what a layer does)."""
    return (
        tuple((t.dtype, tuple(t.shape[1:])) if isinstance(t, torch.Tensor) else type(t)
              for t in xs),
        tuple(m.training for m in modules),
    )  # fmt: skip


@contextlib.contextmanager
def buffers_kept(model: nn.Module):
    """Probe forwards leave the buffers (a BatchNorm's running statistics) as they were:
    their values, and which tensor each module holds (a forward that reassigns a buffer,
    ``self.last = x``, left the probe's batch in the model, stop 32 round 4)."""
    with _kept(buffer_slots(model)):
        yield


@contextlib.contextmanager
def _kept(slots):
    """Yields ``(held, saved)``: each slot's tensor and ``(version, copy)`` of it; puts every
    slot's tensor back after, and copies back the values of those written (found by value
    too: torch's batch_norm kernel writes a BatchNorm's running statistics without
    bumping their version counter), leaving the others untouched so that the step's own
    check (:class:`BufferWrites`) sees no write where there was none."""
    held = [mod._buffers.get(name) for _, mod, name in slots]
    saved = [None if b is None else (_version(b), b.detach().clone()) for b in held]
    try:
        yield held, saved
    finally:
        for (_, mod, name), b in zip(slots, held):
            mod._buffers[name] = b
        with torch.no_grad():
            for b, kept in zip(held, saved):
                if b is not None and (_version(b) != kept[0] or not _same(b, kept[1])):
                    b.copy_(kept[1])


def cuda_devices(model: nn.Module, xs: tuple, kwargs=None) -> list[int]:
    """The CUDA devices a probe forward of ``model`` on ``xs`` uses (whose random state
    ``torch.random.fork_rng`` must keep)."""
    tensors = [*tensors_in(xs, kwargs or {}), *model.parameters(), *model.buffers()]
    return sorted({t.get_device() for t in tensors if t.is_cuda})


def run_forward(
    model: nn.Module, xs: tuple, seed: int | None = None, kwargs=None, keep_buffers: bool = True
):
    """``model(*xs, **kwargs)`` without gradients, under random state ``seed`` (so that dropout draws
    the same masks in every probe), leaving the caller's random state as it was, and the
    buffers too (``keep_buffers``): each probe starts from the same state, so a forward
    that updates a buffer from the weights (spectral_norm's power iteration) is not taken
    for one that mixes examples (refused with "largest change 0.000165" after one step)."""
    cuda = cuda_devices(model, xs, kwargs)
    kept = _kept(buffer_slots(model)) if keep_buffers else contextlib.nullcontext()
    with torch.no_grad(), torch.random.fork_rng(devices=cuda), kept:
        if seed is not None:  # the devices in use only: torch.manual_seed would also queue
            # a seed for every CUDA device not initialised yet, outside the fork
            torch.random.default_generator.manual_seed(seed)
            for i in cuda:
                torch.cuda.default_generators[i].manual_seed(seed)
        return model(*xs, **(kwargs or {}))


def precise(dtype: torch.dtype) -> bool:
    """Whether values of ``dtype`` are compared at float64's tolerance (see :func:`unchanged`)."""
    return dtype in (torch.float64, torch.complex128)


def unchanged(before: torch.Tensor, after: torch.Tensor, fine: bool | None = None) -> torch.Tensor:
    """Elementwise ``torch.allclose(rtol=1e-5, equal_nan=True)`` with an absolute floor of
    1e-7 of the largest finite value of ``before``: what a probe that moved one example
    requires of everything else, as a tensor (one device sync: the caller's verdict).

    Values computed in float64 (``fine``; by default ``before``'s dtype) are held to
    ``rtol=1e-11`` and a floor of 1e-13: a forward that mixes weakly (``h + h.sum()``
    before a saturated ``tanh`` moved the other examples by 1e-9) passed the float32
    tolerance, and its per-example gradients were then wrong at that level (stop 31).
    """
    if before.numel() == 0:
        return torch.ones_like(before, dtype=torch.bool)
    fine = precise(before.dtype) if fine is None else fine
    rtol, floor = (1e-11, 1e-13) if fine else (1e-5, 1e-7)
    scale = torch.where(torch.isfinite(before), before.abs(), 0).max()
    near = (after - before).abs() <= rtol * before.abs() + floor * scale
    return near | (after == before) | (after.isnan() & before.isnan())


def _comparable(t: torch.Tensor) -> torch.Tensor:
    """``t`` as real float64 (bool, integer and complex outputs compared like the rest)."""
    return (torch.view_as_real(t) if t.is_complex() else t).double()


def _batched_leaves(out, B: int) -> list[torch.Tensor]:
    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.dim() >= 1
            and t.shape[0] == B]  # fmt: skip


def _largest_change(base, other, B: int, i) -> float | None:
    """The largest change of any example but ``i`` between two outputs (None: none);
    ``i`` an index, or a ``(B,)`` bool mask of the examples whose change is not looked at."""
    keep = torch.arange(B) != i if isinstance(i, int) else ~i
    worst = None
    for a, b in zip(_batched_leaves(base, B), _batched_leaves(other, B)):
        if a.shape != b.shape:
            continue
        fine = precise(a.dtype)
        a, b = _comparable(a[keep.to(a.device)]), _comparable(b[keep.to(b.device)])
        if not bool(unchanged(a, b, fine).all()):
            diff = (a - b).abs().nan_to_num(nan=float("inf")).max()
            worst = max(worst or 0.0, float(diff))
    return worst


def _least_like(t: torch.Tensor, i: int) -> tuple[int, bool]:
    """The example whose input differs most from example ``i``'s (L1), and whether any does."""
    flat = t.reshape(t.shape[0], -1)  # (B, features); a (B,) input of tokens too
    flat = flat if flat.is_complex() else flat.double()
    dist = (flat - flat[i : i + 1]).abs().sum(1).nan_to_num(nan=float("inf"))
    j = int(dist.argmax())
    return j, bool(dist[j] > 0)


# stop 58: a mask or table shared by every example, handed in x beside the batch, is read
# row b for example b when its length happens to equal the batch size (refused here as
# mixing, with causes that did not name it), and refused by its row count otherwise
# (without the fix). Both messages name it; the buffer was checked equal to a loop.
_SHARED_INPUT = (
    ". If an input in x is shared by every example (a mask or position table whose length "
    "only happens to equal the batch size), it is not one row per example: keep it on the "
    "model (register_buffer) or expand it to one row per example"
)


def refuse_mixing_forward(
    model: nn.Module,
    xs: tuple,
    B: int,
    who: str,
    detail: str = "",
    batch_may_fail: bool = False,
    kwargs: dict | None = None,
    groups: bool = False,
) -> bool:
    """Refuse a forward in which an example's output reads another example's input.

    Example ``i`` (first, then last: a forward in which example b reads b + 1 changes
    another output only when the last example changes) is given the input least like its
    own, under the random state of the unchanged run, and every other example's output
    must stay the same. Run without gradients, buffers restored (see :func:`buffers_kept`).

    Args:
        model: the model; ``xs``: its inputs, every tensor batch-first with ``B`` rows.
        who: the prefix of the error (``"ghost clipping"``).
        detail: a sentence on what that way would have computed instead.
        batch_may_fail: an error of a probe forward is no verdict (True is returned);
            else it is raised.
        kwargs: keyword arguments of the forward, handed to every probe as they are.
        groups: also probe every other pair of examples (:func:`_refuse_group_mixing`,
            ``2 * ceil(log2 B)`` more forwards): for the ways that take row b of the
            batch for example b's own (ghost clipping, Opacus' hooks).

    Returns:
        True if the probe was made; False if no example's input differs from example
        ``i``'s (the batch is one input repeated), so that the next batch probes again.

    Raises:
        ValueError: the forward mixes examples, naming the first module whose output
            changed for examples whose inputs did not (when one can be found), and the fix.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(B)))
    base = None
    batched = [t for t in xs if isinstance(t, torch.Tensor) and t.dim() >= 1]
    for i in (0, B - 1):
        # the first input in which some example differs from example i (a mask or a
        # constant first input repeated on every row would make the probe a no-op)
        j = next((j for j, d in (_least_like(t, i) for t in batched) if d), None)
        if j is None:
            return False
        swapped = tuple(
            _take(t, i, j) if isinstance(t, torch.Tensor) and t.dim() >= 1 else t for t in xs
        )
        try:
            if base is None:
                base = run_forward(model, xs, seed, kwargs)
            other = run_forward(model, swapped, seed, kwargs)
        except Exception:
            if batch_may_fail:
                return True
            raise
        change = _largest_change(base, other, B, i)
        if change is not None:
            where = _mixing_module(model, xs, swapped, B, i, seed, kwargs)
            raise ValueError(
                f"{who}: the forward mixes examples: giving example {i} the input of example "
                f"{j} changed the outputs of the others (largest change {change:.3g})"
                f"{f', first in the output of module {where}' if where else ''}, so no "
                f"example's gradient is its own and clipping does not bound it{detail}. "
                f"Common causes: a BatchNorm in training mode or without running statistics, "
                f"a mean, sum or softmax over the batch. Use GroupNorm/LayerNorm (opacus."
                f"validators.ModuleValidator.fix(model) swaps BatchNorm for GroupNorm), or "
                f"model.eval() with running statistics, or compute that layer per example"
                f"{_SHARED_INPUT if len(xs) > 1 else ''}"
            )
    if groups and B >= 3:
        return _refuse_group_mixing(model, xs, B, who, detail, batch_may_fail, kwargs, base, seed)
    return True


def _partners(batched: list[torch.Tensor], B: int) -> torch.Tensor:
    """``(B,)``: for each example, the row (among at most 64 spread over the batch) whose
    inputs differ most from its own (L1 over every batched input)."""
    cand = torch.linspace(0, B - 1, min(B, 64)).round().long().unique()
    dist = torch.zeros(B, len(cand), dtype=torch.float64)
    for t in batched:
        flat = t.reshape(B, -1)
        flat = (torch.view_as_real(flat).reshape(B, -1) if flat.is_complex() else flat).double()
        d = torch.cdist(flat, flat[cand.to(flat.device)], p=1)  # (B, |cand|)
        dist += d.nan_to_num(nan=float("inf")).cpu()
    return cand[dist.argmax(1)]


def _refuse_group_mixing(model, xs, B, who, detail, batch_may_fail, kwargs, base, seed) -> bool:
    """Probe every ordered pair of examples (k reads i) with ``2 * ceil(log2 B)`` forwards.

    Moving example 0 and then the last one sees a forward in which example k reads
    example i only when i is one of those two: a forward that mixes examples 1 and 2
    only, or in which every example reads the middle one (``h + h[B // 2]``), gave
    ghost clipping each row's gradient as if it were that example's own, with no error
    (stop 42). Here the examples whose index has bit ``b`` set (then clear) are all given
    other examples' inputs at once, and every example not moved must keep its output:
    any two examples differ in some bit, so each pair is seen moved apart once.
    """
    batched = [t for t in xs if isinstance(t, torch.Tensor) and t.dim() >= 1]
    partner = _partners(batched, B)
    index = torch.arange(B)
    for bit in range((B - 1).bit_length()):
        for want in (1, 0):
            moved = ((index >> bit) & 1) == want
            probe = tuple(_take_rows(t, moved, partner) if isinstance(t, torch.Tensor)
                          and t.dim() >= 1 else t for t in xs)  # fmt: skip
            try:
                other = run_forward(model, probe, seed, kwargs)
            except Exception:
                if batch_may_fail:
                    return True
                raise
            change = _largest_change(base, other, B, moved)
            if change is None:
                continue
            where = _mixing_module(model, xs, probe, B, moved, seed, kwargs)
            who_moved = index[moved].tolist()
            shown = ", ".join(map(str, who_moved[:8])) + (", ..." if len(who_moved) > 8 else "")
            raise ValueError(
                f"{who}: the forward mixes examples: giving examples {shown} the inputs of "
                f"other examples changed the outputs of examples whose inputs did not change "
                f"(largest change {change:.3g})"
                f"{f', first in the output of module {where}' if where else ''}, so no "
                f"example's gradient is its own and clipping does not bound it{detail}. "
                f"Common causes: an output that reads fixed rows of the batch (h[1], "
                f"h[B // 2]), a shift or a window over the batch, a BatchNorm in training "
                f"mode, a mean, sum or softmax over the batch. Compute every layer per "
                f"example (each row from its own input only)"
            )
    return True


def _take_rows(t: torch.Tensor, moved: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """``t`` with each row in ``moved`` replaced by the row ``partner`` names (a copy)."""
    out = t.clone()
    rows = moved.nonzero().flatten()
    out[rows.to(t.device)] = t[partner[rows].to(t.device)]
    return out


def _take(t: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """``t`` with row ``i`` replaced by row ``j`` (a copy)."""
    out = t.clone()
    out[i] = t[j]
    return out


def _mixing_module(model: nn.Module, xs, swapped, B: int, i: int, seed: int, kwargs):
    """``"path (Type)"`` of the first module call whose output changed for an example
    other than ``i`` while its inputs for those examples did not: where the mixing is.
    Only run once a forward was found to mix (two more probe forwards); ``i`` as in
    :func:`_largest_change`."""
    keep = torch.arange(B) != i if isinstance(i, int) else ~i
    paths: dict[int, str] = {}
    for path, mod in model.named_modules():
        paths.setdefault(id(mod), path or "<root>")

    def rows(tree):
        return [
            (_comparable(t[keep.to(t.device)]), precise(t.dtype)) for t in _batched_leaves(tree, B)
        ]

    def record(calls):
        def hook(mod, args, kwargs, out):
            calls.append((mod, rows((args, kwargs)), rows(out)))

        return hook

    def same(a, b):
        return len(a) == len(b) and all(
            x.shape == y.shape and bool(unchanged(x, y, fine).all())
            for (x, fine), (y, _) in zip(a, b)
        )

    runs = []
    for inputs in (xs, swapped):
        calls: list = []
        handles = [
            m.register_forward_hook(record(calls), with_kwargs=True) for m in model.modules()
        ]
        try:
            run_forward(model, inputs, seed, kwargs)
        finally:
            for h in handles:
                h.remove()
        runs.append(calls)
    if len(runs[0]) != len(runs[1]):
        return None
    for (mod, in_a, out_a), (mod_b, in_b, out_b) in zip(*runs):
        if mod is mod_b and same(in_a, in_b) and not same(out_a, out_b):
            return f"{paths.get(id(mod), '?')} ({type(mod).__name__})"
    return None


# -- buffers written from the batch (stop 32, round 4) ----------------------------------
#
# DP-SGD noises the gradients, and epsilon covers what they release: the parameters. A
# buffer the forward writes from the batch (a running mean of the inputs, an
# InstanceNorm's running statistics in training mode, ``self.last = x``) holds un-noised
# statistics of the private data, saved with the model and outside epsilon; it trained
# with no error. A buffer written from the parameters only (spectral_norm's power
# iteration) or not from data at all (a step counter) releases nothing and is let through.


def buffer_slots(model: nn.Module) -> tuple[tuple[str, nn.Module, str], ...]:
    """``(path, module, name)`` of every buffer entry of ``model``, each (module, name) once
    (``path`` the dotted name ``named_buffers`` gives it)."""
    slots, seen = [], set()
    for path, mod in model.named_modules(remove_duplicate=False):
        for name in mod._buffers:
            if (id(mod), name) not in seen:
                seen.add((id(mod), name))
                slots.append((f"{path}.{name}" if path else name, mod, name))
    return tuple(slots)


def _version(t) -> int | None:
    # an inference tensor keeps no version counter (and cannot be written outside
    # inference mode, where no step runs)
    return None if t is None or t.is_inference() else t._version


def buffer_marks(slots) -> list:
    """What each slot holds now, and that tensor's version counter (bumped by every
    in-place write, through any view or ``.detach()`` of it): no copy, ~0.1 µs a buffer."""
    return [(t, _version(t)) for t in (mod._buffers.get(name) for _, mod, name in slots)]


def written_buffers(slots, marks) -> list[int]:
    """Indices of the slots reassigned or written in place since ``marks`` were taken."""
    out = []
    for i, ((_, mod, name), (t, v)) in enumerate(zip(slots, marks)):
        if mod._buffers.get(name) is not t or _version(t) != v:
            out.append(i)
    return out


def _value(slots, i):
    _, mod, name = slots[i]
    t = mod._buffers.get(name)
    return None if t is None else t.detach().clone()


def _same(a, b) -> bool:
    """Bit-equal values (NaN equal to NaN): a write made from the parameters only gives
    the same value whatever the batch, where a running mean moves by 1e-6 at momentum
    0.001, below any tolerance."""
    if a is None or b is None:
        return a is None and b is None
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(((a == b) | ((a != a) & (b != b))).all())


def _writes_of(model, slots, inputs, seed, kwargs) -> dict[int, torch.Tensor | None] | None:
    """``{slot: value after}`` of the slots one forward on ``inputs`` writes (reassigned,
    or changed in version or value), every buffer restored after (None: the forward
    failed)."""
    with _kept(slots) as (held, saved):
        try:
            run_forward(model, inputs, seed, kwargs, keep_buffers=False)
        except Exception:  # noqa: BLE001 - a probe input the forward cannot take: no verdict
            return None
        out = {}
        for i, (_, mod, name) in enumerate(slots):
            now = mod._buffers.get(name)
            if now is not held[i] or (
                now is not None and (_version(now) != saved[i][0] or not _same(now, saved[i][1]))
            ):
                out[i] = _value(slots, i)
        return out


def _describe(slots, i: int) -> str:
    path, mod, _ = slots[i]
    return f"buffer {path} ({type(mod).__name__})"


BUFFER_FIX = (
    "Freeze it while training privately (module.eval() for that layer, or "
    "track_running_stats=False for a norm layer), compute it from public data before "
    "training, or update it outside forward, from outputs already made private"
)


def refuse_buffer_writes(model, slots, xs: tuple, B: int, who: str, kwargs=None):
    """Refuse a forward that writes a buffer from the batch, before anything is written.

    One forward on the batch (no gradients, buffers restored after, like every probe)
    finds the buffers it writes; forwards on other inputs (example 0, then the last,
    given the input least like its own; the batch with one example more; all zeros when
    no example differs) must write each of them bit for bit the same value, or the value
    depends on the private data.

    Returns:
        The slots written with the same value whatever the batch (let through at every
        step), or None when the forward fails on the batch (no verdict: a forward
        written for one example at a time).

    Raises:
        ValueError: naming the buffer and its module, and the fix; the model unchanged.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(B)))
    base = _writes_of(model, slots, xs, seed, kwargs)
    if not base:  # nothing written, or no verdict
        return None if base is None else frozenset()
    batched = [k for k, t in enumerate(xs) if isinstance(t, torch.Tensor) and t.dim() >= 1
               and t.shape[0] == B]  # fmt: skip
    others = []
    for i in (0, B - 1) if B >= 2 else ():
        j = next((j for j, d in (_least_like(xs[k], i) for k in batched) if d), None)
        if j is not None:
            others.append(tuple(_take(t, i, j) if k in batched else t for k, t in enumerate(xs)))
    if not others:  # one example, or one input repeated: the values themselves
        others.append(tuple(torch.zeros_like(t) if k in batched else t for k, t in enumerate(xs)))
    others.append(tuple(torch.cat([t, t[:1]]) if k in batched else t for k, t in enumerate(xs)))
    probed = False
    for inputs in others:
        got = _writes_of(model, slots, inputs, seed, kwargs)
        if got is None:
            continue
        probed = True
        for i in sorted(set(base) | set(got)):
            if i not in base or i not in got or not _same(base[i], got[i]):
                raise ValueError(
                    f"{who}: the forward writes {_describe(slots, i)} from the batch (its "
                    f"new value changed with the batch's inputs): it would hold un-noised "
                    f"statistics of the private data, which the privacy accounting "
                    f"(epsilon) does not cover. Refused before anything was written. "
                    f"{BUFFER_FIX}"
                )
    if not probed:
        i = min(base)
        raise ValueError(
            f"{who}: the forward writes {_describe(slots, i)}, and no forward on another "
            f"input ran to show that its value does not depend on the private batch; "
            f"refused before anything was written. {BUFFER_FIX}"
        )
    return frozenset(base)


class BufferWrites:
    """The buffer check of one model's per-example way: :func:`refuse_buffer_writes` once
    per input signature and set of training flags, then, at every call, the version
    counters and identities of the buffers before and after the step's forward (a write
    the probe did not see: a forward that writes only now and then).

    A model without buffers costs one ``if`` a call.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.slots = buffer_slots(model)
        self._modules = list(model.modules())
        self._let = {}  # forward_key -> the slots written the same whatever the batch

    def before(self, xs: tuple, B: int, who: str, kwargs=None):
        """Probe (once per signature) and mark; hand the result to :meth:`after`.

        An empty batch holds no private data, and no verdict is drawn from it: an EMA of
        nothing writes NaN whatever the inputs, which would have let the buffer through
        for every later batch of that signature."""
        if not self.slots or B == 0:
            return None
        key = forward_key(xs, self._modules)
        let = self._let.get(key)
        if let is None:
            let = refuse_buffer_writes(self.model, self.slots, xs, B, who, kwargs)
            if let is not None:
                self._let[key] = let
        return buffer_marks(self.slots), let or frozenset()

    def after(self, state, who: str) -> None:
        """Refuse a write since :meth:`before` that the probe did not let through; a
        reassigned buffer is put back, one written in place cannot be (no copy is kept)."""
        if state is None:
            return
        marks, let = state
        written = [i for i in written_buffers(self.slots, marks) if i not in let]
        if not written:
            return
        # which were written in place, before the reassigned ones are put back (after,
        # every written buffer is the marked tensor again and all read as in place)
        in_place = [i for i in written if self.slots[i][1]._buffers.get(self.slots[i][2])
                    is marks[i][0] and marks[i][0] is not None]  # fmt: skip
        for i, (_, mod, name) in enumerate(self.slots):
            if mod._buffers.get(name) is not marks[i][0]:
                mod._buffers[name] = marks[i][0]
        raise ValueError(
            f"{who}: the forward wrote {_describe(self.slots, written[0])} in this step, "
            f"though the probe of this input signature saw no such write (a forward that "
            f"writes only now and then); it may hold un-noised statistics of the private "
            f"data, which the privacy accounting (epsilon) does not cover. The step was "
            f"refused (no parameter changed); "
            + (
                "the buffer was already updated by this step's forward (written in place: "
                "restore it from a checkpoint). "
                if in_place
                else "the reassigned buffer was put back. "
            )
            + BUFFER_FIX
        )


def compiled_wrapper(model: nn.Module) -> bool:
    """Whether ``model`` is ``torch.compile``'s wrapper (``OptimizedModule``)."""
    return type(model).__name__ == "OptimizedModule" and isinstance(
        getattr(model, "_orig_mod", None), nn.Module
    )


def compiled_in_place(module: nn.Module) -> bool:
    """Whether ``module.compile()`` was called on ``module`` itself."""
    return module.__dict__.get("_compiled_call_impl") is not None


def holds_compiled(model: nn.Module) -> bool:
    """Whether a module of ``model`` runs compiled code (``module.compile()`` in place, or a
    ``torch.compile`` wrapper held as a child)."""
    return any(compiled_wrapper(m) or compiled_in_place(m) for m in model.modules())
