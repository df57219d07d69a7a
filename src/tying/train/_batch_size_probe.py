"""Refuse, before ``mode="vmap"``, a forward whose rows depend on the batch they are in.

``mode="vmap"`` takes each example's gradient of the forward run on that example alone, a
batch of one. A forward that keeps examples apart but reads the batch's size or a row's
position (``h / x.shape[0]``, ``h + torch.arange(x.shape[0])[:, None]``) computes other
numbers on a batch of one than on the batch: each example's gradient was that of another
model than the one trained (``h / x.shape[0]`` at B = 8: 0.65 off the batched forward's
per-example gradient on a weight whose largest is 0.10), with no error, while Opacus' hooks
and ghost clipping differentiate the batched forward. Moving rows (the mixing probe of
:mod:`tying.train._vetting`) cannot see it: no example reads another.

The probe here runs the forward on the batch and under ``vmap`` one example at a time
(as ``mode="vmap"`` runs it), and every row must agree: at every batch size not seen before
under an input signature and set of training flags (:meth:`_PerExample._vet_forward`),
since a forward may read the size only past some threshold (``if x.shape[0] > 64``). On a
784-256-10 MLP of a class of one's own at B = 256, two forwards without gradients (14 ms
where the step takes 540 ms, one thread); a Poisson run of 1,000 steps at B ~ 256 meets 87
sizes. A dependence that shows at no size the run meets is never seen, and needs none.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.func import vmap
from torch.utils._pytree import tree_flatten

from tying.train._vetting import _kept, buffer_slots, cuda_devices, run_forward


def _tolerance(dtype: torch.dtype, device: torch.device) -> tuple[float, float]:
    """``(rtol, floor)``: what rounding alone can move a row by between the batched
    forward and the forward on one example (other kernels, other summation orders).

    float64 is held tight (a factor of the batch size is ~1e15 ulps); float32 to 1e-3;
    half precision, and float32 on a GPU that may use TF32 matrix products, to 5e-2 and a
    floor of 1e-2 of the largest value (a bfloat16 transformer layer differed by one ulp,
    0.0156 at 2.1): a batch-size dependence that small is not caught there (a factor 1/B
    is, for any B >= 2).
    """
    if dtype in (torch.float64, torch.complex128):
        return 1e-9, 1e-11
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    if dtype in (torch.float32, torch.complex64) and not tf32:
        return 1e-3, 1e-4
    return 5e-2, 1e-2


def _worst_row(batched: torch.Tensor, alone: torch.Tensor):
    """``(example, batch value, alone value, difference)`` of the largest difference
    beyond :func:`_tolerance` between two ``(B, ...)`` outputs, or None."""
    rtol, floor = _tolerance(batched.dtype, batched.device)
    a, b = batched.detach(), alone.detach()
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    a, b = a.double(), b.double()
    if a.numel() == 0:
        return None
    finite = torch.isfinite(a)
    scale = torch.where(finite, a.abs(), 0).max()
    same = (a == b) | (a.isnan() & b.isnan())
    off = ~same & ~((a - b).abs() <= rtol * a.abs() + floor * scale)
    if not bool(off.any()):
        return None
    diff = torch.where(off, (a - b).abs().nan_to_num(nan=float("inf")), -1.0)
    k = int(diff.flatten().argmax())
    row = k // max(1, a[0].numel())
    return row, float(a.flatten()[k]), float(b.flatten()[k]), float(diff.flatten()[k])


def _one_at_a_time(model: nn.Module, xs: tuple, seed: int):
    """The forward on each example alone, as ``mode="vmap"`` runs it: ``(B, 1, ...)``
    leaves, without gradients, under random state ``seed``, buffers restored."""

    def alone(*x):
        return model(*(t.unsqueeze(0) for t in x))

    cuda = cuda_devices(model, xs)
    with torch.no_grad(), torch.random.fork_rng(devices=cuda), _kept(buffer_slots(model)):
        torch.random.default_generator.manual_seed(seed)
        for i in cuda:
            torch.cuda.default_generators[i].manual_seed(seed)
        return vmap(alone, randomness="different")(*xs)


def _same_tree(a, b) -> bool:
    la, sa = tree_flatten(a)
    lb, sb = tree_flatten(b)
    if sa != sb:
        return False
    for x, y in zip(la, lb):
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            return False
        if isinstance(x, torch.Tensor) and (
            x.shape != y.shape or not bool(((x == y) | (x.isnan() & y.isnan())).all())
        ):
            return False
    return True


def refuse_batch_dependent_forward(model: nn.Module, xs: tuple, B: int, who: str) -> bool:
    """Refuse a forward whose output for an example differs on the batch and alone.

    The forward runs on the batch and on each example alone (``vmap`` over batches of
    one, as ``mode="vmap"`` computes it), under one random state, and each output leaf
    that has a row per example must agree (:func:`_tolerance`): two forwards more at the
    first step of an input signature. Where they differ and the forward is random in its
    training mode (dropout), they are compared again in eval mode, every module's flag
    set back after: the draws on a batch and on one example differ, and what is looked
    for is a dependence on the batch, not on the draws. A forward random in eval mode too
    (``torch.randn_like`` in ``forward``), one that fails on the batch or under
    ``vmap``, and leaves whose shapes do not line up give no verdict (True).

    Args:
        model: the model; ``xs``: its inputs, every tensor batch-first with ``B`` rows.
        who: the prefix of the error.

    Returns:
        True (the probe is made once per signature).

    Raises:
        ValueError: naming the example, its value on the batch and alone, and the fix.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(B + 1)))
    flags = [(m, m.training) for m in model.modules()]
    # the probe's own warnings are no verdict (torch's "performance drop" of a layer's
    # fused eval kernel under vmap, an error where warnings are errors, gave none)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _probe(model, xs, B, who, seed, flags)


def _probe(model: nn.Module, xs: tuple, B: int, who: str, seed: int, flags: list) -> bool:
    try:
        base = run_forward(model, xs, seed)
        worst = _first_difference(base, _one_at_a_time(model, xs, seed), B)
        # a difference may be the draws alone (dropout): they never line up on a batch
        # and on one example (measured: a (1, 5) randn is not row 0 of an (8, 5) one on
        # the CPU), so a forward that gives another output under another random state is
        # compared again in eval mode, and given no verdict if it is random there too
        if worst is not None and not _same_tree(base, run_forward(model, xs, seed + 1)):
            if not any(t for _, t in flags):
                return True
            for m, _ in flags:
                m.training = False  # the attribute: a train() override may do more
            base = run_forward(model, xs, seed)
            if not _same_tree(base, run_forward(model, xs, seed + 1)):
                return True
            worst = _first_difference(base, _one_at_a_time(model, xs, seed), B)
    except Exception:  # noqa: BLE001 - a forward that fails here: the step says why, or runs
        return True
    finally:
        for m, t in flags:
            m.training = t
    if worst is None:
        return True
    leaf, row, on_batch, on_own, diff = worst
    raise ValueError(
        f"{who}: the forward depends on the batch it runs in: example {row}'s output "
        f"({leaf}largest difference {diff:.3g}) is {on_batch:.6g} on the batch of {B} "
        f"but {on_own:.6g} on that example alone, a batch of one, which is what "
        f"mode='vmap' differentiates; each example's gradient would be that of another "
        f"model than the one trained. Common causes: dividing or scaling by the batch "
        f"size (x.shape[0], x.size(0), len(x)), terms that depend on a row's position "
        f"(torch.arange(x.shape[0])). Use mode='ghost' or Opacus' hooks, which "
        f"differentiate the batched forward, or remove the batch dependence (reshaping "
        f"with it, x.view(x.shape[0], -1), is fine)"
    )


def _first_difference(base, alone, B: int):
    """``(leaf label, example, batch value, alone value, difference)`` of the first output
    leaf with a row per example whose rows differ (:func:`_worst_row`), or None. Leaves
    that do not line up (``(B, ...)`` on the batch, ``(B, 1, ...)`` alone) are skipped."""
    leaves_b, spec_b = tree_flatten(base)
    leaves_a, spec_a = tree_flatten(alone)
    if spec_a != spec_b:
        return None
    for k, (b, a) in enumerate(zip(leaves_b, leaves_a)):
        if not (isinstance(b, torch.Tensor) and isinstance(a, torch.Tensor)):
            continue
        if b.dim() < 1 or b.shape[0] != B or a.shape != (B, 1, *b.shape[1:]):
            continue
        worst = _worst_row(b, a.select(1, 0))
        if worst is not None:
            return (f"output leaf {k}, " if len(leaves_b) > 1 else "", *worst)
    return None
