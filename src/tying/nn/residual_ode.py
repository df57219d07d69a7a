"""A weight-tied residual network and its limit, a neural ODE.

Claim B8 (``cross-layer-sharing``): a residual net whose L steps all read one
layer's parameters θ,

    x ← x + h · f(x; θ),    h = T / L,

is the explicit Euler method for the ODE ``dx/dt = f(x; θ)`` on ``[0, T]``. As L
grows the tied net converges to the ODE's solution (error O(1/L)), so the shared
layer *is* the vector field. An untied net has no such limit: each step has
its own field. :class:`TiedResidualNet` ties its steps with a
:class:`tying.Plan`, so ``tying.count`` reports ``logical = L × physical``.

:func:`odeint` solves the ODE for comparison: with ``torchdiffeq`` (optional,
``pip install torchdiffeq``) when it is installed, else a fixed-step classical
Runge–Kutta (RK4, error O(h⁴)).

Example:
    >>> import torch, tying
    >>> _ = torch.manual_seed(0)
    >>> net = TiedResidualNet(dim=3, hidden=16, depth=200)
    >>> x0 = torch.randn(5, 3)
    >>> exact = odeint(net.field, x0, t1=1.0, method="rk4", steps=400)
    >>> float((net(x0) - exact).abs().max().detach()) < 1e-2
    True
    >>> tying.count(net).ratio
    200.0
"""

from __future__ import annotations

import importlib.util
import math
import warnings

import torch
from torch import nn

from tying.core import Plan, share
from tying.nn._args import (
    flag,
    int_arg,
    is_bool,
    refuse_foreign_keywords,
    scalar_value,
    stored_float,
)
from tying.nn._depth_record import check_depth, record_depth
from tying.nn._input_errors import CAUGHT, raise_if_mismatched
from tying.nn._layer_plans import apply_plan, tie_setting

__all__ = ["NeuralODE", "TiedResidualNet", "VectorField", "odeint"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "softplus": nn.Softplus}


class VectorField(nn.Module):
    """A one-hidden-layer field ``f(x) = W₂ σ(W₁ x + b₁) + b₂`` on ``R^dim``.

    Args:
        dim: state width.
        hidden: hidden width.
        activation: one of ``"tanh"``, ``"relu"``, ``"gelu"``, ``"softplus"``.

    Raises:
        ValueError: for a non-positive size or an unknown activation; on an input
            whose last dim is not ``dim``.

    Example:
        >>> VectorField(4, 8)(torch.randn(2, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(self, dim: int, hidden: int, activation: str = "tanh") -> None:
        super().__init__()
        error = f"VectorField: dim and hidden must be positive ints, got {dim!r}, {hidden!r}"
        dim, hidden = int_arg(dim, 1, error), int_arg(hidden, 1, error)
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"VectorField: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.dim, self.hidden = dim, hidden
        self.inner = nn.Linear(dim, hidden)
        self.act = _ACTIVATIONS[activation]()
        self.outer = nn.Linear(hidden, dim)

    def fan_in(self) -> int:
        """Inputs of one hidden unit: ``dim`` (a field reused at every step keeps it, claim B15)."""
        return self.dim

    def reset_parameters(self) -> None:
        """U(±1/√fan_in) per linear map (``nn.Linear``'s rule): ``dim`` inside, ``hidden`` outside.

        In a tied stack the one field is reused L times, but each use still sums the
        same inputs, so the bound is the untied one; the ``h = t1/L`` step keeps the
        stack's total update O(1) as L grows.
        """
        self.inner.reset_parameters()
        self.outer.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"VectorField: expected input of shape (..., {self.dim}), got {tuple(x.shape)}"
            )
        try:
            return self.outer(self.act(self.inner(x)))
        except CAUGHT as e:
            raise_if_mismatched(self, e, x)
            raise


class TiedResidualNet(nn.Module):
    """``depth`` residual steps ``x ← x + (t1/depth)·f(x)`` sharing one field (claim B8).

    Args:
        dim: state width.
        hidden: hidden width of the field.
        depth: number of residual steps (layers).
        t1: integration time; the step is ``h = t1 / depth``.
        tied: True (default) ties every step to step 0 with a plan; False keeps one
            field per step (the untied baseline with ``depth``× the parameters).
        activation: the field's nonlinearity.

    Attributes:
        steps: ``ModuleList`` of :class:`VectorField`; ``steps.i`` reads ``steps.0``'s
            parameters when tied.
        h: the step size ``t1 / depth`` (read-only; follows an assignment to ``t1``).

    Raises:
        ValueError: for a non-positive ``depth`` or ``t1`` (built or assigned later), and
            on an assignment to ``depth`` (build a new net instead).

    Example:
        >>> import tying
        >>> tied, untied = TiedResidualNet(4, 8, 10), TiedResidualNet(4, 8, 10, tied=False)
        >>> tying.count(tied).physical, tying.count(untied).physical
        (76, 760)
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        depth: int,
        *,
        t1: float = 1.0,
        tied: bool = True,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        depth = int_arg(depth, 1, f"TiedResidualNet: depth must be a positive int, got {depth!r}")
        self.t1 = t1  # checked by the property's setter
        self.tied = flag("TiedResidualNet", "tied", tied)
        self.steps = nn.ModuleList(VectorField(dim, hidden, activation) for _ in range(depth))
        if self.tied:
            apply_plan(Plan([share("steps.*", like="steps.0")]), self)

    # t1, depth and h are read from one place (stop 50): h was stored at construction, so
    # net.t1 = 2.0 afterwards ran the old step (0.46 off at depth 8, no error)
    @property
    def t1(self) -> float:
        """The integration time; assigning it is checked as the argument is, and moves ``h``."""
        d = self.__dict__  # a layer pickled before stop 50 stored it as "t1"
        return d.get("_t1", d.get("t1"))

    @t1.setter
    def t1(self, t1) -> None:
        # an inf t1 made every step inf·f(x); True was read as 1.0
        value = scalar_value(t1)
        if (
            is_bool(value)
            or isinstance(value, torch.Tensor)
            or not (value > 0 and math.isfinite(value))
        ):
            raise ValueError(f"TiedResidualNet: t1 must be > 0 and finite, got {t1!r}")
        self.__dict__["_t1"] = _stored_time("TiedResidualNet", t1)

    @property
    def depth(self) -> int:
        """The number of residual steps: ``len(self.steps)``."""
        return len(self._modules["steps"])

    @depth.setter
    def depth(self, value) -> None:
        raise ValueError(
            f"TiedResidualNet: depth is the number of steps built ({self.depth}), got an "
            f"assignment of {value!r}; build a new TiedResidualNet(..., depth={value!r})"
        )

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        record_depth(self.depth, destination, prefix)

    def _tying_check_load(self, state_dict, prefix, local_metadata):
        """Refuse a tied net's state dict of another depth (see :mod:`._depth_record`)."""
        check_depth(
            self, self.depth, state_dict, prefix, local_metadata, "TiedResidualNet(..., depth={})"
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        self._tying_check_load(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )

    @property
    def h(self) -> float:
        """The step size ``t1 / depth``."""
        return self.t1 / self.depth

    @property
    def field(self) -> VectorField:
        """The shared vector field (step 0; every step when tied)."""
        return self.steps[0]

    def extra_repr(self) -> str:
        # t1 lives in no child: without it two nets of different step sizes printed alike
        return f"depth={self.depth}, t1={self.t1}, tied={tie_setting(self, self.tied)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., dim)`` → the state after ``depth`` steps, ``(..., dim)``.

        Raises:
            ValueError: for a float16/bfloat16 state whose step ``h = t1/depth`` is below
                8 of its units in the last place (``h < 8·eps``): most of each update falls
                below the state's last bit and is lost.
        """
        if x.dtype in (torch.float16, torch.bfloat16):
            _check_half_step(x.dtype, self.h, self.t1, self.depth)
        try:
            for f in self.steps:
                x = x + self.h * f(x)
            return x
        except CAUGHT as e:
            raise_if_mismatched(self, e, x)
            raise


# a half-precision state refuses steps below this many units in the last place (stop 37)
_HALF_MIN_STEP_ULPS = 8


def _check_half_step(dtype: torch.dtype, h: float, t1: float, depth: int) -> None:
    """Refuse Euler steps that a half-precision state cannot add up (stop 37).

    Each step rounds ``x + h·f(x)`` to the state's bits, an error of up to ``eps/2·|x|``,
    while the update is ``h·|f|``: a bfloat16 ``TiedResidualNet(depth=1024)`` returned its
    input unchanged (every update lost, 0.50 off for a move of 0.50) and ``depth=64`` was
    0.33 off, with no error, as ``odeint`` refuses such a state (stop 33).
    """
    eps = torch.finfo(dtype).eps
    if h < _HALF_MIN_STEP_ULPS * eps:
        most = max(1, math.floor(t1 / (_HALF_MIN_STEP_ULPS * eps)))
        raise ValueError(
            f"TiedResidualNet: a {dtype} state cannot add up steps of h = t1/depth = "
            f"{t1:g}/{depth} = {h:.3g}: each update h·f(x) falls mostly below the state's last "
            f"bit ({dtype} eps = {eps:.3g}; a step needs h >= {_HALF_MIN_STEP_ULPS}·eps) and is "
            f"lost; run the layer in float32 (layer.float() and x.float(), or torch.autocast, "
            f"which keeps the residual stream float32) or use depth <= {most} at t1={t1:g}"
        )


def _rk4(field: nn.Module, x: torch.Tensor, t1: float, steps: int) -> torch.Tensor:
    h = t1 / steps
    for _ in range(steps):
        k1 = field(x)
        k2 = field(x + 0.5 * h * k1)
        k3 = field(x + 0.5 * h * k2)
        k4 = field(x + h * k3)
        x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def _stored_time(who: str, t1) -> float:
    return stored_float(
        who,
        "t1",
        t1,
        "for a learned end time call odeint(field, x, t1=t1); for a fixed one pass t1.item()",
    )


# torchdiffeq.odeint keywords with no counterpart here, and what a ported call uses
_TORCHDIFFEQ_NAMES = {
    "options": "rk4's options=dict(step_size=h) is steps=round(t1 / h) (torchdiffeq's rk4 "
    "without a step_size takes one step per interval of t: 0.375 for e^-1 on [0, 1], "
    "steps=256 here gives 0.36788); dopri5's options are not passed on: call "
    "torchdiffeq.odeint",
    "event_fn": "events are not provided: call torchdiffeq.odeint_event",
}


def _check_solver(t1, method, steps, rtol, atol) -> int:
    """Refuse solver settings that gave a wrong answer or a solver's assertion (stop 33);
    return ``steps`` as a plain int (NumPy's taken)."""
    if method not in ("dopri5", "rk4"):
        raise ValueError(f"odeint: method must be 'dopri5' or 'rk4', got {method!r}")
    if isinstance(t1, list | tuple) or (isinstance(t1, torch.Tensor) and t1.numel() > 1):
        # torchdiffeq.odeint(func, y0, t) takes a grid t and returns x at every time; the
        # same call here named only "a finite t1 > 0" (stop 56)
        got = tuple(t1.shape) if isinstance(t1, torch.Tensor) else f"a {type(t1).__name__}"
        raise ValueError(
            f"odeint: need a finite t1 > 0, one number: the end time (the start is 0), not "
            f"torchdiffeq's time grid t; got {got}; for x at the last time pass "
            f"t1=float(t[-1]) (with t[0] = 0), "
            f"for x at several times call odeint once per time, and write the field as "
            f"x -> dx/dt (torchdiffeq's is (t, x) -> dx/dt)"
        )
    error = f"odeint: need a finite t1 > 0 and an int steps >= 1, got t1={t1!r}, steps={steps!r}"
    value = scalar_value(t1)
    if (
        is_bool(value)
        or isinstance(value, torch.Tensor)
        or not (value > 0 and math.isfinite(value))
    ):
        raise ValueError(error)
    steps = int_arg(steps, 1, error)
    # rtol=-1 let torchdiffeq accept every step (0.58 for e^-0.5 = 0.61, no error); NaN or
    # both 0 ended in its "underflow in dt" assertion
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if is_bool(tol) or not (tol >= 0 and math.isfinite(tol)):
            raise ValueError(f"odeint: {name} must be a finite number >= 0, got {tol!r}")
    if rtol == 0 and atol == 0:
        raise ValueError(
            "odeint: rtol and atol are both 0, so no step can meet them; give one of them > 0"
        )
    return steps


def odeint(
    field: nn.Module,
    x0: torch.Tensor,
    t1: float = 1.0,
    *,
    method: str = "dopri5",
    steps: int = 256,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    **torchdiffeq_names: object,
) -> torch.Tensor:
    """Solve ``dx/dt = field(x)`` from ``x(0) = x0`` and return ``x(t1)``.

    Args:
        field: an autonomous vector field (a module or callable ``x -> dx/dt``).
        x0: initial state ``(..., dim)``.
        t1: end time (> 0).
        method: ``"dopri5"`` (adaptive, needs torchdiffeq) or ``"rk4"`` (fixed step,
            built in). ``"dopri5"`` falls back to ``"rk4"`` when torchdiffeq is missing,
            with a ``RuntimeWarning`` (``rtol``/``atol`` are then not applied).
        steps: number of RK4 steps.
        rtol, atol: tolerances of the adaptive solver.

    Returns:
        ``x(t1)``, shaped like ``x0``.

    Raises:
        ValueError: for an unknown method, a ``t1`` that is not finite and > 0,
            ``steps`` that is not an int >= 1, an ``rtol``/``atol`` that is negative or not
            finite (or both 0), a float16/bfloat16 ``x0``, an ``x0`` that is not a
            floating-point or complex tensor, or ``method="dopri5"`` with torchdiffeq
            under a ``torch.func`` transform (use ``"rk4"`` there).
            A ``t1`` that is a time grid (torchdiffeq's ``t``) names ``t1=float(t[-1])``.
        TypeError: torchdiffeq's ``options`` or ``event_fn``, naming what to use here.

    Example:
        >>> decay = lambda x: -x
        >>> x1 = odeint(decay, torch.ones(1, dtype=torch.float64), 1.0, method="rk4", steps=100)
        >>> abs(float(x1) - 0.36787944117) < 1e-9
        True
    """
    refuse_foreign_keywords("odeint", torchdiffeq_names, _TORCHDIFFEQ_NAMES)
    steps = _check_solver(t1, method, steps, rtol, atol)
    if not isinstance(x0, torch.Tensor) or not (x0.is_floating_point() or x0.is_complex()):
        # an integer or bool state failed inside torchdiffeq ("`t` must be a floating point
        # Tensor", a t nobody passed) and was cast silently by rk4 (stop 39)
        got = x0.dtype if isinstance(x0, torch.Tensor) else type(x0).__name__
        # a ValueError, as the float16/bfloat16 state below: a state odeint cannot integrate
        raise ValueError(
            f"odeint: x0 must be a floating-point (or complex) tensor, the state the solver "
            f"moves by fractional steps, got {got}; pass x0.float() (or x0.double())"
        )
    if x0.dtype in (torch.float16, torch.bfloat16):
        # a step adds h·f(x), far below x's last bit in 8 (bf16) or 11 (fp16) bits of
        # mantissa: bf16 rk4 of dx/dt = -x from 1 to t1 = 0.5 returned 1.0 (e^-0.5 = 0.61),
        # dopri5 0.996, with no error (stop 33)
        raise ValueError(
            f"odeint: x0 is {x0.dtype}, too coarse to add up the solver's small steps "
            f"(each update falls below the state's last bit and is lost); integrate in "
            f"float32 or float64 (x0.float() and a float32 field)"
        )
    if x0.numel() == 0:  # nothing to integrate (torchdiffeq's step control asserted here)
        return _rk4(field, x0, t1, 1)
    if method == "dopri5":
        if importlib.util.find_spec("torchdiffeq") is not None:
            if torch._C._are_functorch_transforms_active():
                # torchdiffeq's step control is an autograd.Function without setup_context
                # and updates its state in place: vmap/grad/jacrev failed deep inside it
                # with torch's own message, naming neither odeint nor the fix (stop 56)
                raise ValueError(
                    "odeint: method='dopri5' (torchdiffeq) does not run under torch.func "
                    "transforms (vmap, grad, jacrev, jacfwd, ...): its adaptive step control "
                    "is an autograd.Function without setup_context and updates its state in "
                    "place; pass method='rk4' (fixed step, built in; NeuralODE(..., "
                    "method='rk4')) there"
                )
            if torch.compiler.is_compiling():
                # torchdiffeq counts the steps that land on a time with Tensor.unique,
                # whose size depends on the values: torch.compile's default backend failed
                # on it ("LoweringException: DynamicOutputShapeException: aten._unique2",
                # stop 56). The solve runs eagerly inside a compiled model (a graph break);
                # the field it calls is the same module. Wrapped here, not by a decorator:
                # torch.compiler.disable imports torch._dynamo (seconds at import time)
                return torch.compiler.disable(_dopri5)(field, x0, t1, rtol, atol)
            return _dopri5(field, x0, t1, rtol, atol)
        # the answer is still computed, but not to the rtol/atol asked for: say so
        warnings.warn(
            f"odeint: method='dopri5' needs torchdiffeq, which is not installed, so this is "
            f"fixed-step rk4 with {steps} steps and rtol={rtol}, atol={atol} are not applied; "
            f"install torchdiffeq (pip install 'tying[experiments]'), or pass method='rk4' "
            f"to ask for the fixed-step solver",
            RuntimeWarning,
            stacklevel=2,
        )
    return _rk4(field, x0, t1, steps)


def _dopri5(field, x0: torch.Tensor, t1, rtol: float, atol: float) -> torch.Tensor:
    import torchdiffeq

    # the times are real for a complex state too (torchdiffeq refuses complex t);
    # stacked, not torch.tensor([0, t1]): a t1 that requires grad (a learned end
    # time) got no gradient from dopri5 with no error, while rk4 gave it (stop 41)
    real = {"dtype": x0.real.dtype, "device": x0.device}
    end = torch.as_tensor(t1, **real).reshape(())
    t = torch.stack([torch.zeros((), **real), end])
    return torchdiffeq.odeint(lambda _t, x: field(x), x0, t, rtol=rtol, atol=atol)[-1]


class NeuralODE(nn.Module):
    """The depth → ∞ limit of :class:`TiedResidualNet`: ``x ↦ x(t1)`` under ``dx/dt = field(x)``.

    Args:
        field: the vector field (e.g. ``net.field`` of a tied residual net).
        t1: integration time.
        method, steps, rtol, atol: as for :func:`odeint`.

    Raises:
        ValueError: for the settings :func:`odeint` refuses (at construction).

    Example:
        >>> net = TiedResidualNet(2, 8, 1000)
        >>> ode = NeuralODE(net.field, method="rk4", steps=200)
        >>> x = torch.randn(4, 2)
        >>> float((ode(x) - net(x)).abs().max().detach()) < 1e-3
        True
    """

    def __init__(
        self,
        field: nn.Module,
        t1: float = 1.0,
        *,
        method: str = "dopri5",
        steps: int = 256,
        rtol: float = 1e-7,
        atol: float = 1e-9,
        **torchdiffeq_names: object,
    ) -> None:
        super().__init__()
        refuse_foreign_keywords("NeuralODE", torchdiffeq_names, _TORCHDIFFEQ_NAMES)
        steps = _check_solver(t1, method, steps, rtol, atol)  # here, not at the first call
        self.field, self.t1 = field, _stored_time("NeuralODE", t1)
        self.method, self.steps, self.rtol, self.atol = method, steps, rtol, atol

    def extra_repr(self) -> str:
        return (
            f"t1={self.t1}, method={self.method!r}, steps={self.steps}, rtol={self.rtol}, "
            f"atol={self.atol}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return odeint(
                self.field,
                x,
                self.t1,
                method=self.method,
                steps=self.steps,
                rtol=self.rtol,
                atol=self.atol,
            )
        except CAUGHT as e:
            raise_if_mismatched(self, e, x)
            raise
        except ValueError as e:
            # odeint refuses an integer state (stop 39): name the layer and its dtype, as for
            # any other dtype clash (a float16 state keeps odeint's own refusal)
            if isinstance(x, torch.Tensor) and not (x.is_floating_point() or x.is_complex()):
                raise_if_mismatched(self, e, x)
            raise
