"""Stacks of transformer blocks, and sharing one block's parameters across the stack.

Claim B8 (``cross-layer-sharing``): an ALBERT-style stack is N layers that all read
one layer's parameters. It is not a special class: it is an ordinary stack plus a
:class:`tying.Plan` (``share("layers.*", like="layers.0")``, optionally followed by
``free("layers.*.norm*")`` so that each layer keeps its own norms). :func:`albert_plan`
writes that plan; :func:`share_layers` applies it. The parameters then exist once,
so an optimizer keeps state once, ``tying.count`` reports ``logical = N × physical``,
and the budget saved can buy a wider layer.

Claim B10 (``encdec-kv-sharing``): :class:`EncoderDecoder` is a small
encoder-decoder transformer whose attention modules are named so that
:meth:`EncoderDecoder.kv_plan` can tie W_K and W_V across encoder self-attention,
decoder self-attention and cross-attention (per layer, or across layers too).

Example:
    >>> import torch, tying
    >>> stack = Stack(TransformerBlock(32, 4) for _ in range(6))
    >>> report = share_layers(stack, free=("norm*",))
    >>> c = tying.count(stack)
    >>> c.logical == 6 * tying.count(TransformerBlock(32, 4)).logical, round(c.ratio, 2)
    (True, 5.71)
    >>> stack(torch.randn(2, 7, 32)).shape
    torch.Size([2, 7, 32])
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from tying.core import ApplyReport, Plan, share
from tying.core import free as _free
from tying.nn._args import flag, int_arg
from tying.nn._depth_record import check_depth, record_depth
from tying.nn._input_errors import CAUGHT, raise_if_mismatched
from tying.nn._layer_plans import apply_plan
from tying.nn.attention import Attention, kv_sharing_plan

__all__ = ["EncoderDecoder", "Stack", "TransformerBlock", "albert_plan", "share_layers"]


class TransformerBlock(nn.Module):
    """A pre-norm transformer block: self-attention, optional cross-attention, MLP.

    Args:
        d_model: width.
        n_heads: query heads.
        d_ff: hidden width of the MLP (default ``4·d_model``).
        kv_heads, v_heads: K/V heads of the attention (see :class:`Attention`).
        cross: add a cross-attention sub-layer that reads a memory (decoder block).
        causal: causal self-attention (decoder block).
        dropout: dropout on the residual branches and attention weights.

    Attributes:
        self_attn, cross_attn (if ``cross``): :class:`Attention` modules.
        norm1, norm2, norm3 (if ``cross``): ``LayerNorm``; free them per layer with
            ``free("layers.*.norm*")`` in an ALBERT plan.
        mlp: ``Linear → GELU → Linear``.

    Raises:
        ValueError: from :class:`Attention` for bad head counts; for a ``d_ff`` that is not
            a positive int; on a memory passed to a block without cross-attention (or
            missing for one with it).

    Example:
        >>> block = TransformerBlock(16, 2, cross=True, causal=True)
        >>> block(torch.randn(2, 5, 16), memory=torch.randn(2, 9, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        d_ff: int | None = None,
        kv_heads: int | None = None,
        v_heads: int | None = None,
        cross: bool = False,
        causal: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # d_model=-1 died in LayerNorm's torch.empty (stop 37)
        d_model = int_arg(
            d_model, 1, f"TransformerBlock: d_model must be a positive int, got {d_model!r}"
        )
        if d_ff is not None:
            # d_ff=0 built an MLP with no hidden unit (the branch added only its bias)
            d_ff = int_arg(
                d_ff,
                1,
                f"TransformerBlock: d_ff must be a positive int (or None for 4·d_model), "
                f"got {d_ff!r}",
            )
        d_ff = 4 * d_model if d_ff is None else d_ff
        heads = {"kv_heads": kv_heads, "v_heads": v_heads, "dropout": dropout}
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, n_heads, causal=causal, **heads)
        self.cross = flag("TransformerBlock", "cross", cross)
        if self.cross:
            self.norm3 = nn.LayerNorm(d_model)
            self.cross_attn = Attention(d_model, n_heads, **heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.drop = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        """Attention: Xavier (see :meth:`Attention.reset_parameters`); MLP: U(±1/√fan_in); norms: 1, 0."""
        _reset_children(self)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, T, d_model)`` (and ``memory`` ``(B, S, d_model)`` when ``cross``) → ``(B, T, d_model)``."""
        if self.cross and memory is None:
            raise ValueError("TransformerBlock(cross=True) needs memory=(B, S, d_model)")
        if not self.cross and memory is not None:
            raise ValueError(
                "TransformerBlock got memory= but has no cross-attention; build it with cross=True"
            )
        try:
            x = x + self.drop(self.self_attn(self.norm1(x)))
            if self.cross:
                x = x + self.drop(self.cross_attn(self.norm3(x), memory))
            return x + self.drop(self.mlp(self.norm2(x)))
        except CAUGHT as e:
            raise_if_mismatched(self, e, x, memory, names=("x", "memory"))
            raise


def _reset_children(module: nn.Module) -> None:
    # a child with its own reset_parameters decides its scheme (Attention: Xavier)
    for child in module.children():
        if hasattr(child, "reset_parameters"):
            child.reset_parameters()
        else:
            _reset_children(child)


class Stack(nn.Module):
    """Blocks applied in order; tie them with :func:`share_layers` for an ALBERT-style stack.

    Args:
        layers: the blocks (any modules taking ``(x)`` or ``(x, memory)``).

    Attributes:
        layers: an ``nn.ModuleList``.

    Raises:
        ValueError: when ``layers`` is empty.

    Example:
        >>> stack = Stack(nn.Linear(4, 4) for _ in range(3))
        >>> stack(torch.randn(2, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(self, layers: Iterable[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        if len(self.layers) == 0:
            raise ValueError("Stack needs at least one layer")

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        record_depth(len(self.layers), destination, prefix)

    def _tying_check_load(self, state_dict, prefix, local_metadata):
        """Refuse a weight-tied stack's state dict of another depth (see :mod:`._depth_record`)."""
        check_depth(
            self, len(self.layers), state_dict, prefix, local_metadata, "the Stack with {} layers"
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        self._tying_check_load(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        try:
            for layer in self.layers:
                x = layer(x) if memory is None else layer(x, memory)
            return x
        except CAUGHT as e:
            raise_if_mismatched(self, e, x, memory, names=("x", "memory"))
            raise


def albert_plan(stack: str = "layers", *, free: Iterable[str] = ()) -> Plan:
    """The plan of an ALBERT-style stack: every ``<stack>.i`` reads ``<stack>.0`` (claim B8).

    Args:
        stack: path of the ``ModuleList`` (``"layers"``, ``"encoder.layers"``).
        free: patterns, relative to one layer, that stay per-layer (``"norm*"``
            frees ``norm1``, ``norm2``, …); one str is one pattern; the last matching
            rule wins.

    Returns:
        A :class:`tying.Plan`.

    Example:
        >>> albert_plan("encoder.layers", free=("norm*",))
        Plan([share('encoder.layers.*', like='encoder.layers.0'), free('encoder.layers.*.norm*')])
    """
    # one pattern given as a str was read letter by letter (stop 32): free="norm*" was
    # refused for 'n', and a str whose every letter matched a name (digits of Sequential
    # blocks) and held a '*' freed every parameter. One str is one pattern.
    free = (free,) if isinstance(free, str) else tuple(free)
    rules = [share(f"{stack}.*", like=f"{stack}.0")]
    rules += [_free(f"{stack}.*.{pattern}") for pattern in free]
    return Plan(rules)


def share_layers(
    model: nn.Module, stack: str = "layers", *, free: Iterable[str] = ()
) -> ApplyReport:
    """Tie every layer of ``model.<stack>`` to its first layer (ALBERT-style, claim B8).

    Args:
        model: the model holding the stack.
        stack: path of the ``ModuleList`` inside ``model``.
        free: per-layer exceptions, relative to one layer (e.g. ``("norm*",)``; one str
            is one pattern).

    Returns:
        The :class:`tying.ApplyReport` of :func:`albert_plan` applied to ``model``.

    Raises:
        tying.TieError: when the path matches nothing or the layers differ in structure.

    Example:
        >>> import tying
        >>> stack = Stack(nn.Linear(8, 8) for _ in range(4))
        >>> share_layers(stack).physical, tying.count(stack).logical
        (72, 288)
    """
    return apply_plan(albert_plan(stack, free=free), model)


class EncoderDecoder(nn.Module):
    """A small encoder-decoder transformer with named attention modules (claim B10).

    Token embeddings (one vocabulary for source and target) plus learned positions;
    ``layers`` encoder blocks; ``layers`` decoder blocks with causal self-attention
    and cross-attention; an output head tied to the embedding.

    Args:
        vocab: vocabulary size (source and target share it).
        d_model, n_heads: width and heads.
        layers: blocks in the encoder and in the decoder.
        max_len: longest sequence (positions).
        d_ff: MLP width (default ``4·d_model``).
        dropout: dropout on residual branches.

    Raises:
        ValueError: for a size that is not a positive int; on token tensors of the wrong
            rank or longer than ``max_len``.

    Example:
        >>> import tying
        >>> model = EncoderDecoder(vocab=12, d_model=16, n_heads=2, layers=2, max_len=10)
        >>> src, tgt = torch.randint(12, (3, 8)), torch.randint(12, (3, 6))
        >>> model(src, tgt).shape
        torch.Size([3, 6, 12])
        >>> before = tying.count(model).physical
        >>> _ = model.kv_plan(across_layers=True).apply(model)
        >>> before - tying.count(model).physical     # 5 of the 6 K and V projections gone
        2720
    """

    def __init__(
        self,
        vocab: int,
        d_model: int,
        n_heads: int,
        layers: int,
        max_len: int,
        *,
        d_ff: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        sizes = (("vocab", vocab), ("d_model", d_model), ("layers", layers), ("max_len", max_len))
        # d_model=-1 died in nn.Embedding's torch.empty (stop 37); layers=True built one
        # layer per stack
        vocab, d_model, layers, max_len = (
            int_arg(value, 1, f"EncoderDecoder: {name} must be a positive int, got {value!r}")
            for name, value in sizes
        )
        self.vocab, self.max_len, self.n_layers = vocab, max_len, layers
        self.embed = nn.Embedding(vocab, d_model)
        self.src_pos = nn.Embedding(max_len, d_model)
        self.tgt_pos = nn.Embedding(max_len, d_model)
        kw = {"d_ff": d_ff, "dropout": dropout}
        self.encoder = Stack(TransformerBlock(d_model, n_heads, **kw) for _ in range(layers))
        self.decoder = Stack(
            TransformerBlock(d_model, n_heads, cross=True, causal=True, **kw) for _ in range(layers)
        )
        self.enc_norm = nn.LayerNorm(d_model)
        self.dec_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)
        apply_plan(Plan([share("head.weight", like="embed.weight")]), self)

    def kv_plan(
        self, *, across_layers: bool = False, parts: tuple[str, ...] = ("k_proj", "v_proj")
    ) -> Plan:
        """The plan tying W_K, W_V of encoder self-, decoder self- and cross-attention.

        Args:
            across_layers: False ties layer ``i``'s three attentions to encoder layer
                ``i``'s self-attention; True ties all of them to encoder layer 0's.
            parts: which projections to tie (default K and V, the claim's; add
                ``"q_proj"`` to tie the queries too).

        Returns:
            A :class:`tying.Plan` built by :func:`kv_sharing_plan`.
        """
        if flag("EncoderDecoder.kv_plan", "across_layers", across_layers):
            targets = ["encoder.layers.*.self_attn", "decoder.layers.*.self_attn"]
            return kv_sharing_plan(
                targets + ["decoder.layers.*.cross_attn"],
                like="encoder.layers.0.self_attn",
                parts=parts,
            )
        return kv_sharing_plan(
            ["decoder.layers.*.self_attn", "decoder.layers.*.cross_attn"],
            like="encoder.layers.*.self_attn",
            parts=parts,
        )

    def _embed(self, tokens: torch.Tensor, pos: nn.Embedding, name: str) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] > self.max_len:
            raise ValueError(
                f"EncoderDecoder: expected {name} tokens of shape (batch, seq ≤ {self.max_len}), "
                f"got {tuple(tokens.shape)}"
            )
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.embed(tokens) + pos(positions)  # (B, T, d)

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """Source tokens ``(B, S)`` → memory ``(B, S, d_model)``."""
        return self.enc_norm(self.encoder(self._embed(src, self.src_pos, "source")))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Source ``(B, S)`` and target-input tokens ``(B, T)`` → logits ``(B, T, vocab)``."""
        try:
            memory = self.encode(src)
            h = self.decoder(self._embed(tgt, self.tgt_pos, "target"), memory)
            return self.head(self.dec_norm(h))
        except CAUGHT as e:
            raise_if_mismatched(self, e, devices={"src": src, "tgt": tgt})
            raise
