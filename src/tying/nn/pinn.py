"""Helpers for physics-informed networks (PINNs) on periodic domains.

Claim B14 (``pinn-periodic``): a periodic boundary condition ties the solution
at ``x = 0`` to the solution at ``x = L``. Two ways to impose the tie:

- **hard**: feed the network ``sin(2πnx/L), cos(2πnx/L)`` instead of ``x``
  (:class:`PeriodicFeatures`). Both ends produce the same features, so the
  network's output (and every x-derivative) is periodic by construction: the
  boundary mismatch is zero to float precision.
- **soft**: a *shared* boundary sub-network ``g(t)`` (:class:`SharedBoundary`)
  represents the unknown boundary value (and slope); the main network is
  penalised for differing from ``g`` at either end. Both ends are tied to the
  one sub-network, so the mismatch is small but not zero.

:func:`partial` takes derivatives of a network's output for PDE residuals, and
:func:`mlp` builds the usual tanh MLP.

Example:
    >>> import torch, math
    >>> net = torch.nn.Sequential(PeriodicFeatures(2, period=2.0, periodic_dims=(0,)), mlp([3, 16, 1]))
    >>> ends = torch.tensor([[0.0, 0.3], [2.0, 0.3]], dtype=torch.float64)
    >>> u = net.double()(ends)
    >>> float((u[0] - u[1]).abs().detach()) < 1e-12
    True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

from tying.nn._args import int_arg, is_bool, is_int, scalar_value, stored_float
from tying.nn._input_errors import CAUGHT, raise_if_mismatched

__all__ = ["PeriodicFeatures", "SharedBoundary", "mlp", "partial"]


def _is_period(value) -> bool:
    """A finite number > 0, not a bool (``True`` is not the period 1); a one-element
    tensor by its value."""
    value = scalar_value(value)
    if isinstance(value, torch.Tensor):
        return False
    return not is_bool(value) and value > 0 and math.isfinite(value)


class PeriodicFeatures(nn.Module):
    """Replace periodic coordinates ``x`` by ``sin(2πnx/L), cos(2πnx/L)``, n = 1..harmonics.

    Args:
        in_features: width of the coordinate input (e.g. 2 for ``(x, t)``).
        period: L, the period of every periodic coordinate (> 0).
        harmonics: how many Fourier harmonics per periodic coordinate.
        periodic_dims: which input columns are periodic, a sequence of ints or one int
            (the others pass through, after the periodic features).

    Attributes:
        out_features: ``in_features − len(periodic_dims) + 2·harmonics·len(periodic_dims)``.

    Float16 and bfloat16 coordinates have their phase ``2πn·x/L`` taken in float32 (their
    own 11 or 8 bits broke the periodicity); the features come back in the input's dtype.

    Raises:
        ValueError: for a period that is not finite and > 0, a non-positive
            ``in_features`` or ``harmonics``, a periodic dim that is not an int in range;
            on an input whose last dim is not ``in_features`` or that is not floating point.

    Example:
        >>> feats = PeriodicFeatures(1, period=1.0, harmonics=2)
        >>> feats.out_features, (feats(torch.tensor([[0.25]])).round(decimals=6) + 0.0).tolist()
        (4, [[1.0, 0.0, 0.0, -1.0]])
    """

    def __init__(
        self,
        in_features: int,
        period: float,
        *,
        harmonics: int = 1,
        periodic_dims: Sequence[int] = (0,),
    ) -> None:
        super().__init__()
        in_features = int_arg(  # True was read as one column
            in_features,
            1,
            f"PeriodicFeatures: in_features must be a positive int, got {in_features!r}",
        )
        # period=inf made every frequency 0: features sin 0, cos 0 for every x (stop 33)
        if not _is_period(period):
            raise ValueError(
                f"PeriodicFeatures: period must be > 0, got {period!r}; give a finite number "
                f"(not a bool): an infinite period makes every frequency 0"
            )
        harmonics = int_arg(
            harmonics, 1, f"PeriodicFeatures: harmonics must be an int >= 1, got {harmonics!r}"
        )
        given = periodic_dims
        if isinstance(periodic_dims, numbers.Integral) and not isinstance(periodic_dims, bool):
            # one column, as torch's dim= takes it: died on "'int' object is not iterable"
            # (stop 60)
            periodic_dims = (periodic_dims,)
        try:
            periodic_dims = tuple(periodic_dims)
        except TypeError:  # None, a float: Python's "object is not iterable"
            periodic_dims = (periodic_dims,)  # refused just below, by name
        if not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in periodic_dims
        ):
            # True was read as column 1; 1.0 was kept and failed as a slice at the first call
            raise ValueError(
                f"PeriodicFeatures: periodic_dims must be ints (column indices), got "
                f"{given!r}; pass a sequence of column indices or one int"
            )
        periodic_dims = tuple(int(d) for d in periodic_dims)  # numpy ints too
        dims = sorted({d % in_features for d in periodic_dims if -in_features <= d < in_features})
        # len(periodic_dims), not of its set: (0, 0) was read as (0,) with no error (stop 37)
        if len(dims) != len(periodic_dims) or not dims:
            raise ValueError(
                f"PeriodicFeatures: periodic_dims {tuple(periodic_dims)} must be distinct columns "
                f"of an input of width {in_features}"
            )
        period = stored_float(
            "PeriodicFeatures",
            "period",
            period,
            "the period is a fixed setting: pass period.item()",
        )
        self.in_features, self.period, self.harmonics = in_features, period, harmonics
        self.periodic_dims = tuple(dims)
        self.other_dims = tuple(d for d in range(in_features) if d not in dims)
        self.out_features = len(self.other_dims) + 2 * harmonics * len(dims)

    @property
    def omega(self) -> torch.Tensor:
        """The angular frequencies ``2π n / period``, n = 1..harmonics (float64, CPU).

        Computed on use, not held in a buffer: a non-persistent buffer is neither saved
        nor loaded, so a model built on the ``meta`` device and materialised with
        ``to_empty`` kept uninitialised memory there and computed wrong features
        without an error (stop 25 review).
        """
        return self._omega(torch.device("cpu"))

    def _omega(self, device: torch.device) -> torch.Tensor:
        n = torch.arange(1, self.harmonics + 1, dtype=torch.float64, device=device)
        return 2 * math.pi * n / self.period

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"period={self.period}, harmonics={self.harmonics}, "
            f"periodic_dims={self.periodic_dims}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"PeriodicFeatures: expected coordinates (..., {self.in_features}), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            # an integer x cast omega = 2πn/L to integers (π for L = 2 became 3): wrong
            # features with no error (stop 33)
            raise ValueError(
                f"PeriodicFeatures: coordinates must be floating point, got {x.dtype}; "
                f"pass x.float() (or x.double())"
            )
        # a float16/bfloat16 phase 2πn·x/L is rounded to 11/8 bits: bfloat16 features were
        # off by up to 0.17 and no longer periodic (cos at x = 0.25, 1.25, 3.25 with L = 1:
        # 0.001, 0.02, 0.09) with no error (stop 40); the phase is taken in float32 then
        low = x.dtype in (torch.float16, torch.bfloat16)
        work = torch.float32 if low else x.dtype
        omega = self._omega(x.device).to(work)
        feats = []
        for d in self.periodic_dims:
            phase = x[..., d : d + 1].to(work) * omega  # (..., harmonics)
            feats += [torch.sin(phase).to(x.dtype), torch.cos(phase).to(x.dtype)]
        feats += [x[..., d : d + 1] for d in self.other_dims]
        return torch.cat(feats, dim=-1)


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """``Linear → act → … → Linear`` through ``sizes`` (no activation after the last).

    Args:
        sizes: widths, input first, output last (at least two).
        activation: the nonlinearity class (tanh: smooth, so PDE derivatives exist).

    Returns:
        An ``nn.Sequential``; Xavier-normal weights and zero biases (the usual PINN init).

    Raises:
        ValueError: for fewer than two sizes or a non-positive size.
        TypeError: for an ``activation`` that is a module instance (``nn.ReLU()``, not
            ``nn.ReLU``) or not callable.

    Example:
        >>> mlp([2, 8, 1])
        Sequential(
          (0): Linear(in_features=2, out_features=8, bias=True)
          (1): Tanh()
          (2): Linear(in_features=8, out_features=1, bias=True)
        )
    """
    sizes = list(sizes)
    error = f"mlp: sizes must be at least two positive ints, got {sizes!r}"
    if len(sizes) < 2:
        raise ValueError(error)
    sizes = [int_arg(s, 1, error) for s in sizes]  # NumPy sizes as ints, as nn.Linear shows
    if isinstance(activation, nn.Module) or not callable(activation):
        # an instance (nn.ReLU(), as TiedAutoencoder takes it) was called with no input:
        # "forward() missing 1 required positional argument", or for sizes of length 2 taken
        # with no error and never used (stop 40)
        raise TypeError(
            f"mlp: activation must be a module class (one new module per hidden layer), got "
            f"{'an instance of ' if isinstance(activation, nn.Module) else ''}"
            f"{type(activation).__name__}; pass the class, e.g. activation=nn.ReLU, or "
            f"functools.partial(nn.Softplus, beta=2) for arguments"
        )
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        nn.init.xavier_normal_(lin.weight)
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def partial(u: torch.Tensor, x: torch.Tensor, dim: int, order: int = 1) -> torch.Tensor:
    """``∂^order u / ∂x_dim^order`` for a network output ``u (N, 1)`` of coordinates ``x (N, d)``.

    Args:
        u: outputs, computed from ``x`` (which must require grad).
        x: the coordinates.
        dim: which coordinate column to differentiate by.
        order: how many times (≥ 1).

    Returns:
        ``(N, 1)``, with a graph so it can enter a loss.

    Raises:
        ValueError: when ``x`` is not ``(N, d)`` or does not require grad, ``u`` is not
            one value per row of ``x`` (``(N, 1)`` or ``(N,)``), ``dim`` is not an int in
            ``[-d, d)``, or ``order`` is not an int >= 1; when ``u`` was not computed
            from ``x``. A derivative that no longer depends on ``x`` (order 2 of a linear
            function) is returned as zeros.

    Example:
        >>> x = torch.linspace(0, 1, 5).unsqueeze(1).requires_grad_()
        >>> partial(x**3, x, 0, order=2).detach().squeeze().tolist()
        [0.0, 1.5, 3.0, 4.5, 6.0]
    """
    if x.ndim != 2:
        # a (B, N, d) x was differentiated along its N axis (g[:, dim]): wrong slice, no error
        raise ValueError(f"partial: x must be coordinates (N, d), got shape {tuple(x.shape)}")
    if not x.requires_grad:
        raise ValueError("partial: x must require grad (call x.requires_grad_() before the model)")
    n, d = x.shape
    if u.shape not in ((n, 1), (n,)):
        # the derivative of u.sum() over several outputs is the sum of their derivatives
        raise ValueError(
            f"partial: u must hold one value per row of x, ({n}, 1) or ({n},), got "
            f"{tuple(u.shape)}; differentiate one output at a time (u[:, j:j+1])"
        )
    if not is_int(dim, -d) or dim >= d:
        # dim=-1 or dim=d sliced g[:, dim:dim+1] to an empty (N, 0): a residual of no
        # columns whose sum is 0, with no error (stop 33)
        raise ValueError(f"partial: dim must be an int in [{-d}, {d}), got {dim!r}")
    dim = int(dim)
    order = int_arg(order, 1, f"partial: order must be an int >= 1, got {order!r}")
    dim %= d
    if not u.requires_grad:  # torch's "element 0 of tensors does not require grad"
        raise ValueError(
            "partial: u has no graph back to x (it does not require grad); compute u from x "
            "after x.requires_grad_(), outside torch.no_grad()"
        )
    out = u
    for k in range(order):
        # a derivative that no longer depends on x (order 2 of 3·x, of a linear layer)
        # is 0; torch.autograd.grad crashed on it ("element 0 of tensors does not require
        # grad", or "appears to not have been used in the graph") (stop 39)
        g = None
        if out.requires_grad:
            (g,) = torch.autograd.grad(out.sum(), x, create_graph=True, allow_unused=True)
        if g is None:
            if k == 0:  # u itself does not reach x: a mistake, not a zero derivative
                raise ValueError(
                    "partial: u was not computed from x (x is not in its graph; a copy or "
                    "x.detach() was fed to the model?); pass the x the model read"
                )
            return torch.zeros(n, 1, dtype=out.dtype, device=out.device)
        out = g[:, dim : dim + 1]
    return out


class SharedBoundary(nn.Module):
    """A sub-network ``g(t)`` shared by both ends of a periodic coordinate (claim B14, soft).

    ``g`` maps the non-periodic coordinates ``t`` to the boundary value of ``u``
    (and of ``∂u/∂x``, … up to ``derivatives``). :meth:`penalty` ties both ends to
    it: ``mean Σ_j (∂ʲu(0,t) − g_j(t))² + (∂ʲu(L,t) − g_j(t))²``.

    Args:
        in_features: width of the full coordinate ``(x, t…)``.
        period: L.
        dim: the periodic column.
        hidden: hidden width of ``g``.
        derivatives: also tie ∂u/∂x … ∂ᵐu/∂xᵐ (1 for second-order PDEs).

    Raises:
        ValueError: for a bad ``in_features``, ``dim`` or ``derivatives`` (ints, not bools),
            a period that is not finite and > 0; on coordinates of the wrong width; when
            ``u`` returns other than one value per point (``(N, 1)`` or ``(N,)``); in
            :meth:`penalty` and :meth:`mismatch`, for ``t`` of no points (N = 0).

    Example:
        >>> u = mlp([2, 16, 1])
        >>> bc = SharedBoundary(2, period=1.0, dim=0, derivatives=1)
        >>> t = torch.rand(10, 1)
        >>> float(bc.penalty(u, t).detach()) >= 0.0
        True
    """

    def __init__(
        self,
        in_features: int,
        period: float,
        *,
        dim: int = 0,
        hidden: int = 16,
        derivatives: int = 0,
    ) -> None:
        super().__init__()
        in_features = int_arg(
            in_features,
            1,
            f"SharedBoundary: in_features must be a positive int, got {in_features!r}",
        )
        # period=inf put the right end at x = inf: a finite (saturated) penalty, no error
        if not _is_period(period):
            raise ValueError(
                f"SharedBoundary: period must be > 0, got {period!r}; give a finite number "
                f"(not a bool): the right end is at x = period"
            )
        if not is_int(dim, 0) or dim >= in_features:
            raise ValueError(
                f"SharedBoundary: dim must be in [0, {in_features}), got {dim!r} (an int, not a bool)"
            )
        derivatives = int_arg(
            derivatives, 0, f"SharedBoundary: derivatives must be an int >= 0, got {derivatives!r}"
        )
        # checked when unused too (in_features=1): hidden=0 was taken there with no error
        hidden = int_arg(
            hidden, 1, f"SharedBoundary: hidden must be a positive int, got {hidden!r}"
        )
        period = stored_float(
            "SharedBoundary", "period", period, "the period is a fixed setting: pass period.item()"
        )
        self.in_features, self.period, self.dim = in_features, period, int(dim)
        self.derivatives = derivatives
        n_other = in_features - 1
        if n_other:
            self.g = mlp([n_other, hidden, derivatives + 1])
        else:  # a stationary problem: the boundary values are plain learnable numbers
            self.g = None
            self.values = nn.Parameter(torch.zeros(derivatives + 1))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, period={self.period}, dim={self.dim}, "
            f"derivatives={self.derivatives}"
        )

    def boundary(self, t: torch.Tensor) -> torch.Tensor:
        """``g(t)``: ``(N, derivatives+1)`` boundary value (and slopes)."""
        if self.g is None:
            return self.values.expand(t.shape[0], -1)
        try:
            return self.g(t)
        except CAUGHT as e:
            raise_if_mismatched(self, e, t, names=("t",))
            raise

    def ends(self, u: nn.Module, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u`` (and its x-derivatives up to ``derivatives``) at ``x = 0`` and ``x = L``.

        Args:
            u: the network, coordinates ``(N, in_features)`` → ``(N, 1)``.
            t: the other coordinates ``(N, in_features − 1)``.

        Returns:
            ``(left, right)``, each ``(N, derivatives + 1)``.
        """
        self._check_t(t, "ends")
        return self._at(u, t, 0.0), self._at(u, t, self.period)

    def _check_t(self, t: torch.Tensor, who: str, points: bool = False) -> None:
        if t.ndim != 2 or t.shape[-1] != self.in_features - 1:
            raise ValueError(
                f"SharedBoundary.{who}: expected t of shape (N, {self.in_features - 1}), "
                f"got {tuple(t.shape)}"
            )
        if points and t.shape[0] == 0:
            # penalty's mean over no point was NaN with no error, mismatch's max a bare
            # torch "Expected reduction dim" (stop 55)
            raise ValueError(
                f"SharedBoundary.{who}: t holds no points (shape {tuple(t.shape)}), so there "
                f"is nothing to average or take the max of (the penalty would be NaN); pass "
                f"at least one point (N >= 1)"
            )

    def _at(self, u: nn.Module, t: torch.Tensor, x_value: float) -> torch.Tensor:
        n = t.shape[0]
        x = torch.full((n, 1), x_value, dtype=t.dtype, device=t.device)
        cols = list(t.unbind(-1)) if t.shape[-1] else []
        cols.insert(self.dim, x.squeeze(-1))
        coords = torch.stack(cols, dim=-1).requires_grad_(True)  # (N, in_features)
        out = u(coords)
        shape = tuple(getattr(out, "shape", ()))
        if shape == (n,):
            out = out.unsqueeze(-1)  # one value per point, as partial() takes it
        elif shape != (n, 1):
            # a (N,) output broadcast against g's (N, 1) into (N, N): the penalty summed
            # every point's value against every point's boundary, with no error (stop 40)
            raise ValueError(
                f"SharedBoundary: u must return one value per point, ({n}, 1) or ({n},), got "
                f"{shape if isinstance(out, torch.Tensor) else type(out).__name__}; tie one "
                f"output at a time (lambda c: u(c)[:, j:j+1])"
            )
        values = [out]
        for k in range(1, self.derivatives + 1):
            values.append(partial(out, coords, self.dim, order=k))
        return torch.cat(values, dim=-1)  # (N, derivatives+1)

    def penalty(self, u: nn.Module, t: torch.Tensor) -> torch.Tensor:
        """Soft periodicity: both ends of ``u`` pulled to the shared ``g(t)``.

        Args:
            u: the main network, coordinates ``(N, in_features)`` → ``(N, 1)``.
            t: the other coordinates ``(N, in_features − 1)`` at which to tie the ends.

        Returns:
            A scalar penalty.
        """
        self._check_t(t, "penalty", points=True)
        g = self.boundary(t)
        left, right = self.ends(u, t)
        return ((left - g) ** 2 + (right - g) ** 2).sum(-1).mean()

    def mismatch(self, u: nn.Module, t: torch.Tensor) -> torch.Tensor:
        """``max |u(0,t) − u(L,t)|`` over ``t`` (values only): the periodicity error."""
        self._check_t(t, "mismatch", points=True)
        left, right = self.ends(u, t)
        return (left[:, 0] - right[:, 0]).abs().max()
