"""Small helpers the experiment modules share: config by size, figures, a tiny RNN.

Not an experiment module (``load_all`` skips it).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from tying.experiments.registry import check_size
from tying.experiments.values import _tensor_numpy

__all__ = [
    "UnrolledRNN",
    "by_size",
    "largest",
    "max_abs_diff",
    "new_figure",
    "rngs",
    "smallest",
    "still_gaining",
]

log = logging.getLogger("tying.experiments")

C = TypeVar("C")


def by_size(configs: dict[str, C], size: str) -> C:
    """Return ``configs[size]`` after checking ``size`` is a valid size.

    Example:
        >>> by_size({"quick": 1, "report": 2}, "report")
        2
    """
    check_size(size)
    return configs[size]


def rngs(seed: int) -> tuple[torch.Generator, np.random.Generator]:
    """An explicit torch generator and numpy generator, both from ``seed``.

    Example:
        >>> g, r = rngs(0)
        >>> torch.randn(1, generator=g).shape, r.normal(size=2).shape
        (torch.Size([1]), (2,))
    """
    return torch.Generator().manual_seed(seed), np.random.default_rng(seed)


def new_figure(
    ncols: int = 1, nrows: int = 1, width: float = 4.6, height: float = 3.4
) -> tuple[Figure, list]:
    """A pyplot-free figure and a flat list of its ``nrows × ncols`` axes (no global state).

    Example:
        >>> fig, axes = new_figure(2)
        >>> len(axes)
        2
    """
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute elementwise difference, as a Python float (NaN if either holds one).

    Args:
        a, b: tensors of one shape (a NumPy array, a NumPy or Python number, or a
            list of numbers is read as the tensor of its values, in its own dtype).

    Returns:
        ``max |a - b|``.

    Raises:
        ValueError: the shapes differ. Broadcasting compared every element of one with
            every element of the other (``(n,)`` against ``(n, 1)``), or a one-element
            tensor with all of the other: a number for an "outputs agree" check that
            compared no pair the check meant (stop 54). Or the tensors are empty.
            Integer, bool, half-precision and mixed dtypes are compared in int64,
            float64 or complex128 (torch's own arithmetic wrapped ``uint8`` and rounded
            an int to float32 before subtracting).
        TypeError: ``a`` or ``b`` holds no numbers (text, objects).

    Example:
        >>> max_abs_diff(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]))
        0.5
        >>> max_abs_diff(np.array([0.1, 0.2]), torch.tensor([0.1, 0.2], dtype=torch.float64))
        0.0
    """
    a, b = _tensor(a, "a"), _tensor(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"max_abs_diff() compares two tensors element by element: expected one shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}; reshape one to the other's shape "
            "first (broadcasting would compare elements that do not correspond)"
        )
    if a.numel() == 0:
        raise ValueError(
            f"max_abs_diff() got two empty tensors (shape {tuple(a.shape)}); a check over no "
            "elements would decide nothing"
        )
    a, b = _same_device(a.detach(), b.detach())
    exact = _exact_int_diff(a, b)
    if exact is not None:
        return exact
    a, b = _wide(a, b.dtype), _wide(b, a.dtype)
    return float((a - b).abs().max())


def _same_device(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` and ``b`` on one device: both on the CPU when they are on two (a CUDA output
    against a CPU reference said "Expected all tensors to be on the same device"); a meta
    tensor, which holds no values, is refused by name (stop 62)."""
    for name, t in (("a", a), ("b", b)):
        if t.device.type == "meta":
            raise ValueError(
                f"max_abs_diff() got {name} on the meta device (shape {tuple(t.shape)}, "
                f"{t.dtype}), which holds no values to compare; compute it on a real device"
            )
    if a.device != b.device:
        return a.cpu(), b.cpu()
    return a, b


def _exact_int_diff(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """``max |a - b|`` of two integer (or bool) tensors whose difference int64 cannot
    hold exactly, computed in Python ints; None for any other pair.

    int64 subtraction wraps: ``2**63 - 1`` against ``-2**63`` read 1.0, and uint64 read in
    float64 made ``2**64 - 1`` and ``2**64 - 2`` one number, 0.0 apart (stop 62).
    """
    if a.is_floating_point() or a.is_complex() or b.is_floating_point() or b.is_complex():
        return None
    wide = (torch.int64, torch.uint64)
    if a.dtype not in wide and b.dtype not in wide:
        return None  # 32 bits or fewer: exact in int64 (see _wide)
    bound = float(a.double().abs().max()) + float(b.double().abs().max())
    if bound < 2.0**53:  # no wrap, and every difference exact: _wide's int64/float64 path
        return None
    pairs = zip(a.cpu().reshape(-1).tolist(), b.cpu().reshape(-1).tolist(), strict=True)
    return float(max(abs(int(x) - int(y)) for x, y in pairs))


def _tensor(x: Any, name: str) -> torch.Tensor:
    """``x`` as a tensor of its own values and dtype (stop 61: a NumPy array raised
    "'numpy.ndarray' object has no attribute 'numel'", a float "no attribute 'shape'")."""
    if isinstance(x, torch.Tensor):
        # a sparse tensor: "Could not run 'aten::max' with arguments from the 'SparseCPU'
        # backend" (stop 62); its values are those of the dense one
        return x.to_dense() if x.layout != torch.strided else x
    if isinstance(x, list | tuple):  # tensors with grad in a list: "Can't call numpy()"
        x = [_exact(v) for v in x]
    given = np.array(x)  # a writable copy: torch warns on a read-only array
    if given.dtype.kind not in "biufc":
        raise TypeError(
            f"max_abs_diff() compares numbers, got {name}={repr(x)[:80]} "
            f"({type(x).__name__}, {given.dtype}); pass tensors or arrays of numbers"
        )
    return torch.from_numpy(given)


def _wide(t: torch.Tensor, other: torch.dtype) -> torch.Tensor:
    """``t`` in a dtype its difference with a tensor of dtype ``other`` is right in.

    Two float tensors of one dtype (float32 and wider) are left as they are (every
    experiment's number unchanged). Otherwise torch's own arithmetic gave a wrong
    difference without a word (stop 58): uint8 ``0 - 255`` wraps to 1; an int64 ``2**24 + 1``
    against float32 ``2**24`` is computed in float32 and reads 0; float16 ``65504 -
    (-65504)`` overflows to inf; bool does not subtract at all.
    """
    if t.dtype == other and t.dtype in (
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
    ):
        return t
    if t.is_complex() or other.is_complex:
        return t.to(torch.complex128)
    if t.is_floating_point() or other.is_floating_point or t.dtype == torch.uint64:
        return t.to(torch.float64)
    return t.to(torch.int64)  # bool and integers of 32 bits or fewer: no wrap-around


def _floats(values: Iterable[float], what: str) -> np.ndarray:
    if isinstance(values, numbers.Number) or getattr(values, "ndim", None) == 0:
        raise TypeError(  # said "'float' object is not iterable", "iteration over a 0-d tensor"
            f"{what}() takes the numbers of a check, one per measurement, got one number "
            f"{repr(values)[:80]}; pass a list: {what}([value])"
        )
    if isinstance(values, np.ma.MaskedArray) and values.dtype.kind in "biuf":
        # a masked entry (np.ma.masked_invalid hides a NaN or an inf) is no measurement the
        # check may skip: NaN, as reading it element by element gave; masked arrays' own
        # max/min left it out, and largest(masked_invalid([0.1, nan, inf])) read 0.1
        given = values.astype(np.float64).filled(np.nan)
    elif isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        given = values
    else:
        # each as the report reads it (stop 62): a loss kept as a tensor with grad said
        # "Can't call numpy() on Tensor that requires grad", a bfloat16 one "unsupported
        # ScalarType BFloat16"; a meta tensor is named
        read = _exact(values) if isinstance(values, torch.Tensor) else list(map(_exact, values))
        given = np.asarray(read)
    if given.dtype.kind == "O" and all(isinstance(v, numbers.Real) for v in given.reshape(-1)):
        # ints past int64 (2**64, 10**400) are real numbers NumPy keeps as objects: they
        # were refused as "needs real numbers" (stop 62); read as floats, inf past range
        given = np.array([_float(v) for v in given.reshape(-1)]).reshape(given.shape)
    if given.size and given.dtype.kind not in "biuf":
        # float64 would drop an imaginary part with a warning, and read "0.5" as a number
        raise TypeError(
            f"{what}() needs real numbers, got {given.dtype} values such as "
            f"{given.reshape(-1)[0]!r}; pass the real numbers the check compares "
            "(abs() of a complex error, float() of a text)"
        )
    arr = given.astype(np.float64)
    if arr.ndim > 1:  # "a check over no measurements" said of a table of them (stop 62)
        # np.ravel of a tensor with grad or of a bfloat16 one raises: flatten() is its own
        flat = "values.flatten()" if isinstance(values, torch.Tensor) else "np.ravel(values)"
        raise ValueError(
            f"{what}() needs a flat sequence of numbers, got an array of shape {arr.shape}; "
            f"pass one number per measurement ({flat}, or one row)"
        )
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"{what}() needs one or more numbers, got {arr.size} in shape {arr.shape}; "
            "a check over no measurements would decide nothing"
        )
    return arr


def _exact(v: Any) -> Any:
    """A tensor as a NumPy array of exactly its values (as :func:`~tying.experiments.values.plain`
    reads it: detached, dense, on the CPU, a meta tensor refused; but bfloat16 and float8
    widened exactly to float64, not to the shortest decimal the page prints), anything
    else as it is."""
    if not isinstance(v, torch.Tensor):
        return v
    if v.is_meta:  # refused below, named by its own dtype
        pass
    elif v.is_floating_point() and v.dtype not in (torch.float16, torch.float32, torch.float64):
        v = v.detach().double()
    elif v.dtype == torch.complex32:
        v = v.detach().to(torch.complex64)
    return _tensor_numpy(v)


def _float(v: Any) -> float:
    try:
        return float(v)
    except OverflowError:  # an int past the floats: as far as a float goes
        return math.inf if v > 0 else -math.inf


def largest(values: Iterable[float]) -> float:
    """The largest of ``values``, NaN when any of them is NaN: the worst error of a check.

    Python's ``max`` keeps its first argument when a comparison is False, so
    ``max(0.0, nan) == 0.0``: a NaN error (a broken layer, a diverged fit) would
    vanish from a "worst error <= tol" check and the check would pass. NumPy's max
    carries the NaN through, and a comparison with NaN is False, so the check fails.

    Args:
        values: numbers (floats, ints, NumPy scalars).

    Returns:
        Their maximum as a Python float (the same value ``max`` gives when none is NaN).

    Raises:
        ValueError: when ``values`` is empty (a check over nothing decides nothing).

    Example:
        >>> largest([1e-16, 3e-16]), max(0.0, float("nan")), largest([0.0, float("nan")])
        (3e-16, 0.0, nan)
    """
    return float(_floats(values, "largest").max())


def smallest(values: Iterable[float]) -> float:
    """The smallest of ``values``, NaN when any of them is NaN (see :func:`largest`).

    Args:
        values: numbers (floats, ints, NumPy scalars).

    Returns:
        Their minimum as a Python float.

    Raises:
        ValueError: when ``values`` is empty.

    Example:
        >>> smallest([0.7, 0.9]), min(0.7, float("nan")), smallest([0.7, float("nan")])
        (0.7, 0.7, nan)
    """
    return float(_floats(values, "smallest").min())


def still_gaining(losses: Iterable[float], tail: float = 0.2, by: float = 0.1) -> bool:
    """Whether a fixed-step training run was still improving when its budget ran out.

    The run counts as still gaining when the best loss of its last ``tail`` of steps is
    more than ``by`` (relative) below the best loss before them: a comparison of such
    runs is one at a step budget, not at convergence (stop 36). A loss history holding
    NaN or inf counts as still gaining: that run did not settle anywhere. Losses may be
    negative (a negative log-likelihood): "below" is then by ``by`` of the loss's size.

    Args:
        losses: the training loss at every step, in order.
        tail: fraction of the run that makes its end (0 < tail < 1).
        by: relative drop of the best loss that counts as gaining (0 < by < 1).

    Returns:
        True when the run was still gaining at its last step.

    Raises:
        ValueError: for fewer than 5 losses, or ``tail``/``by`` outside (0, 1).

    Example:
        >>> still_gaining([1.0, 0.5, 0.25, 0.12, 0.06]), still_gaining([1.0, 0.5, 0.5, 0.49, 0.5])
        (True, False)
    """
    arr = _floats(losses, "still_gaining")
    for name, v in (("tail", tail), ("by", by)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"still_gaining(): {name} must lie in (0, 1), got {v!r}")
    if arr.size < 5:
        raise ValueError(
            f"still_gaining() needs the loss at 5 or more steps to split off the run's end, "
            f"got {arr.size}"
        )
    if not np.isfinite(arr).all():
        return True
    cut = min(arr.size - 1, int(round(arr.size * (1 - tail))))
    best = arr[:cut].min()
    # "by below" is relative to the size of the loss: (1 - by) * best moved a negative
    # loss (a negative log-likelihood, an energy) up, so a flat run read as gaining
    bound = (1 - by) * best if best >= 0 else (1 + by) * best
    return bool(arr[cut:].min() < bound)


class RNNStep(nn.Module):
    """One time step of an Elman RNN: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.ih = nn.Linear(input_size, hidden_size)
        self.hh = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.ih(x) + self.hh(h))  # (B, H)


class UnrolledRNN(nn.Module):
    """An RNN unrolled in time: a feed-forward net with one layer (``steps.t``) per step.

    Untied, every step has its own weights; tied with
    ``tying.share("steps.*", like="steps.0")`` it is the RNN (claims A5, B5).

    Args:
        input_size, hidden_size: as for :class:`torch.nn.RNN`.
        steps: the number of time steps (layers).

    Example:
        >>> net = UnrolledRNN(3, 4, steps=5)
        >>> net(torch.zeros(2, 5, 3)).shape
        torch.Size([2, 5, 4])
    """

    def __init__(self, input_size: int, hidden_size: int, steps: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.steps = nn.ModuleList(RNNStep(input_size, hidden_size) for _ in range(steps))

    def load_rnn(self, rnn: nn.RNN) -> None:
        """Copy a one-layer ``nn.RNN``'s weights into every step."""
        with torch.no_grad():
            for step in self.steps:
                step.ih.weight.copy_(rnn.weight_ih_l0)
                step.ih.bias.copy_(rnn.bias_ih_l0)
                step.hh.weight.copy_(rnn.weight_hh_l0)
                step.hh.bias.copy_(rnn.bias_hh_l0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, I) -> hidden states (B, T, H)
        h = x.new_zeros(x.shape[0], self.hidden_size)
        outs = []
        for t, step in enumerate(self.steps):
            h = step(x[:, t], h)
            outs.append(h)
        return torch.stack(outs, dim=1)
