"""HashedNets layers: a large logical weight matrix stored in ``B`` hash buckets.

Claim C8 (``hashednets``): entry ``(i, j)`` of a ``V × D`` matrix reads bucket
``h(i·D + j)`` times a ±1 sign hash; only the ``B ≪ V·D`` buckets are stored and
trained, and every logical weight that hashes to a bucket shares its value. Small
``B`` means more collisions ("interference") and a worse model.

Both layers tie their ``weight`` slot with a :class:`tying.Plan` using
:class:`tying.Hashed`, so ``tying.count`` reports the logical ``V·D`` against the
physical ``B`` and ``tying.save`` stores the buckets only. Memory is O(B):

- the dense weight is created on the ``meta`` device (no storage) before the plan
  replaces it by ``weight_physical`` of shape ``(B,)``;
- :class:`HashedEmbedding` and :class:`HashedEmbeddingBag` (in
  :mod:`tying.nn.hashed_embedding`, re-exported here) hash only the rows they look
  up, never a ``V × D`` index, and add block (ROBE-Z) and quotient-remainder modes
  for recommender-size tables (``V·D`` up to ``2**62``);
- :class:`HashedLinear` must multiply by its whole ``(out, in)`` matrix, so its
  forward materialises it for the matmul (transient, like the dense layer's weight);
  what it stores and trains is ``B`` numbers.

Reading ``layer.weight`` materialises the logical matrix (for inspection and export).

Example:
    >>> import torch, tying
    >>> emb = HashedEmbedding(50_000, 64, buckets=4096)
    >>> emb(torch.tensor([[1, 49_999]])).shape
    torch.Size([1, 2, 64])
    >>> c = tying.count(emb); (c.logical, c.physical)
    (3200000, 4096)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tying.core import Hashed
from tying.nn._args import flag, int_arg
from tying.nn._input_errors import CAUGHT, raise_if_mismatched
from tying.nn.hashed_embedding import (
    HashedEmbedding,
    HashedEmbeddingBag,
    _check_saved_hash,
    _hash_weight,
    _positive_int,
    _save_hash,
    _untied_note,
)

__all__ = ["HashedEmbedding", "HashedEmbeddingBag", "HashedLinear"]


class HashedLinear(nn.Module):
    """A linear layer whose ``(out, in)`` weight is stored in ``buckets`` values (claim C8).

    Args:
        in_features, out_features: as for :class:`torch.nn.Linear`.
        buckets: stored weight values ``B``.
        seed: picks the hash functions.
        signed: multiply by a ±1 sign hash.
        bias: a dense (unhashed) bias of ``out_features``.
        device, dtype: of the parameters.

    Shape:
        ``(*, in)`` → ``(*, out)``.

    Raises:
        ValueError: for non-positive sizes, more ``buckets`` than ``in·out`` weight entries,
            a ``seed`` that is not a non-negative int, ``in·out ≥ 2**31-1``, or an input
            whose last dim is not ``in_features``.
        TypeError: for a ``signed`` or ``bias`` that is not a bool.

    Example:
        >>> import tying
        >>> layer = HashedLinear(300, 100, buckets=1000, bias=False)
        >>> layer(torch.randn(5, 300)).shape
        torch.Size([5, 100])
        >>> tying.count(layer).ratio
        30.0
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        buckets: int,
        *,
        seed: int = 0,
        signed: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        bias = flag("HashedLinear", "bias", bias)
        in_features = self.in_features = _positive_int("in_features", in_features, "HashedLinear")
        out_features = self.out_features = _positive_int(
            "out_features", out_features, "HashedLinear"
        )
        # the layer's own words for its settings (stop 60): they were refused by the
        # relation, as "Hashed(seed=...) must be an int >= 0 ... e.g. Hashed(buckets=1024,
        # ...)" and "rule 0 share('weight', ...)", naming neither HashedLinear nor its keyword
        B = _positive_int("buckets", buckets, "HashedLinear")
        seed = int_arg(seed, 0, f"HashedLinear: seed must be a non-negative int, got {seed!r}")
        signed = flag("HashedLinear", "signed", signed)
        if B > in_features * out_features:
            raise ValueError(
                f"HashedLinear: buckets={B:,} is more than the weight's {out_features:,} × "
                f"{in_features:,} = {in_features * out_features:,} entries, so some buckets "
                f"would never be read; use buckets <= {in_features * out_features:,} (or "
                f"torch.nn.Linear)"
            )
        self.relation = Hashed(B, seed, signed)
        _hash_weight(self, (out_features, in_features), self.relation, device, dtype)
        self.bias = (
            nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        )
        self.reset_parameters()

    @property
    def buckets(self) -> int:
        return self.relation.buckets

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        _save_hash(self, destination, prefix)

    def _tying_check_load(self, state_dict, prefix, local_metadata):
        """Refuse a state dict with buckets saved with another hash (raises ValueError).

        Run by the layer's own load and, before anything is copied, by a load into any
        module above it (``tying.core.slot_loads.LOAD_CHECK``): refused inside a container,
        the load changes nothing (stop 51; it had loaded the modules before this one).
        """
        # buckets saved from a layer with another seed or sign would land in other
        # weight entries with no error (stop 31)
        _check_saved_hash(self, local_metadata, prefix, state_dict)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        self._tying_check_load(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )

    def fan_in(self) -> int:
        """``in_features``: the inputs of one output unit, however many share a bucket."""
        return self.in_features

    def memory_ratio(self) -> float:
        """Stored / logical weight entries: ``B / (in·out)``."""
        return self.buckets / (self.in_features * self.out_features)

    def reset_parameters(self) -> None:
        """Buckets and bias ~ U(±1/√in_features), the rule of ``nn.Linear``.

        Once untied (``tying.untie``) the dense ``weight`` is drawn from the same law
        (a signed hash of a symmetric law is that law); it died on "no attribute
        'weight_physical'" (stop 53).
        """
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            stored = self._parameters.get("weight_physical")
            if stored is None:
                stored = self.weight  # untied: the dense (out, in) parameter itself
            stored.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"HashedLinear expected (*, {self.in_features}), got shape {tuple(x.shape)}"
            )
        try:
            return F.linear(x, self.weight, self.bias)
        except CAUGHT as e:
            raise_if_mismatched(self, e, x)
            raise

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"buckets={self.buckets}, seed={self.relation.seed}, signed={self.relation.signed}, "
            f"bias={self.bias is not None}" + _untied_note(self)
        )
