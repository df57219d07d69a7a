"""A linear (or shallow) autoencoder whose decoder is the encoder's transpose.

Claim C2 (``tied-autoencoder-pca``): with ``W_dec = W_encᵀ`` a linear autoencoder
trained on squared reconstruction error learns the top-k principal subspace of
its data (the row space of ``W_enc``), and under isotropic noise its best error
equals that of the untied autoencoder with twice the parameters.

The tie is a :class:`tying.Transposed` relation applied with a :class:`tying.Plan`
(``share("decoder.weight", like="encoder.weight", relation=Transposed())``): one
``(k, d)`` matrix is stored and trained, ``decoder.weight`` is its transpose read
at forward time, and ``tying.count`` reports ``logical = 2 × physical`` for it.

Example:
    >>> import torch, tying
    >>> ae = TiedAutoencoder(20, 3)
    >>> bool(torch.equal(ae.decoder.weight, ae.encoder.weight.T))
    True
    >>> ae(torch.randn(8, 20)).shape
    torch.Size([8, 20])
    >>> c = tying.count(ae); (c.logical, c.physical)
    (120, 60)
"""

from __future__ import annotations

import torch
from torch import nn

from tying.core import Plan, Transposed, share
from tying.nn._args import flag, int_arg
from tying.nn._input_errors import CAUGHT, raise_if_mismatched
from tying.nn._layer_plans import apply_plan, tie_setting

__all__ = ["TiedAutoencoder"]


class TiedAutoencoder(nn.Module):
    """``x̂ = W_encᵀ σ(W_enc x + b_enc) + b_dec`` with one stored matrix (claim C2).

    Args:
        in_features: d, the data width.
        latent: k, the code width.
        tied: True (default) ties ``decoder.weight`` to ``encoder.weight`` transposed;
            False trains both (the untied baseline).
        bias: biases on encoder and decoder (default False: PCA on centred data).
        activation: a module applied to the code (default None: linear, PCA).

    Attributes:
        encoder: ``Linear(d, k)``.
        decoder: ``Linear(k, d)``; its ``weight`` reads ``encoder.weight.T`` when tied.

    Raises:
        ValueError: for non-positive sizes; on input whose last dim is not ``in_features``.
        TypeError: for an ``activation`` that is a class (``nn.ReLU``, not ``nn.ReLU()``) or
            not callable.

    Example:
        >>> untied = TiedAutoencoder(20, 3, tied=False)
        >>> untied.decoder.weight is untied.encoder.weight
        False
    """

    def __init__(
        self,
        in_features: int,
        latent: int,
        *,
        tied: bool = True,
        bias: bool = False,
        activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        in_features, latent = (
            int_arg(value, 1, f"TiedAutoencoder: {name} must be a positive int, got {value!r}")
            for name, value in (("in_features", in_features), ("latent", latent))
        )
        self.in_features, self.latent = in_features, latent
        self.tied = flag("TiedAutoencoder", "tied", tied)
        bias = flag("TiedAutoencoder", "bias", bias)
        self.encoder = nn.Linear(in_features, latent, bias=bias)
        self.decoder = nn.Linear(latent, in_features, bias=bias)
        if isinstance(activation, type) or not (activation is None or callable(activation)):
            # activation=nn.ReLU (the class, as mlp() takes it) was called on the code as
            # ReLU(inplace=code): encode() returned a module, not a tensor (stop 40)
            what = (
                activation.__name__ if isinstance(activation, type) else type(activation).__name__
            )
            raise TypeError(
                f"TiedAutoencoder: activation must be a module instance or a function applied "
                f"to the code, got {'the class ' if isinstance(activation, type) else ''}"
                f"{what}; pass an instance, e.g. activation=nn.ReLU()"
            )
        self.activation = activation if activation is not None else nn.Identity()
        self.reset_parameters()
        if self.tied:
            apply_plan(
                Plan([share("decoder.weight", like="encoder.weight", relation=Transposed())]),
                self,
            )

    def fan_in(self) -> int:
        """Inputs of one code unit: ``in_features``."""
        return self.in_features

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases.

        Xavier's bound ``√(6/(fan_in + fan_out))`` is symmetric in the two fans, so the
        one tied matrix is scaled right both as the encoder (fan-in d) and, transposed,
        as the decoder (fan-in k).
        """
        for lin in (self.encoder, self.decoder):
            weight = lin._parameters.get("weight")
            if weight is not None:  # the tied decoder weight is the encoder's
                nn.init.xavier_uniform_(weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., d)`` → code ``(..., k)``."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"TiedAutoencoder: expected input of shape (..., {self.in_features}), got {tuple(x.shape)}"
            )
        try:
            return self.activation(self.encoder(x))
        except CAUGHT as e:
            raise_if_mismatched(self, e, x)
            raise

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Code ``(..., k)`` → reconstruction ``(..., d)``."""
        if z.shape[-1] != self.latent:
            raise ValueError(
                f"TiedAutoencoder: expected a code of shape (..., {self.latent}), got {tuple(z.shape)}"
            )
        try:
            return self.decoder(z)
        except CAUGHT as e:
            raise_if_mismatched(self, e, z, names=("z",))
            raise

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.latent}, tied={tie_setting(self, self.tied)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
