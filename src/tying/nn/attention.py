"""Attention whose key/value projections are shared across heads, layers and blocks.

Claim B9 (``kv-sharing``): letting several query heads read one key and/or value
projection cuts parameters. ``n_heads`` query heads read ``kv_heads`` key heads
and ``v_heads`` value heads:

- ``kv_heads == n_heads``: standard multi-head attention (MHA);
- ``1 < kv_heads < n_heads``: grouped-query attention (GQA), head ``h`` reads
  K/V head ``h // (n_heads // kv_heads)``;
- ``kv_heads == 1``: multi-query attention (MQA);
- ``v_heads == 1`` with ``kv_heads == n_heads``: one ``W_V`` shared by every head,
  ``W_Q`` and ``W_K`` per head (the seed's example).

Sharing *inside* one layer is structural (fewer rows in ``k_proj``/``v_proj``),
so ``tying.count`` sees the smaller matrices. Sharing *across* layers or across
encoder self-, decoder self- and cross-attention (claim B10) is a tie between
modules and goes through a :class:`tying.Plan`; :func:`kv_sharing_plan` writes it.

The attention itself is :func:`torch.nn.functional.scaled_dot_product_attention`.

Example:
    >>> import torch, tying
    >>> mha = Attention(64, n_heads=8)
    >>> gqa = Attention(64, n_heads=8, kv_heads=2)
    >>> mqa = Attention(64, n_heads=8, kv_heads=1)
    >>> x = torch.randn(2, 10, 64)
    >>> [tuple(m(x).shape) for m in (mha, gqa, mqa)] == [(2, 10, 64)] * 3
    True
    >>> [tying.count(m).physical for m in (mha, gqa, mqa)]
    [16640, 10400, 9360]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tying.core import Plan, share
from tying.nn._args import flag, forward_ad_active, int_arg
from tying.nn._input_errors import CAUGHT, raise_if_mismatched
from tying.nn._mha_names import refuse_mha_call

__all__ = ["Attention", "kv_sharing_plan"]

# The key under which an attention's state-dict metadata records its head layout (stop 32)
HEADS_METADATA_KEY = "tying.heads"

_SDPA_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


class Attention(nn.Module):
    """Multi-head attention with ``kv_heads`` key heads and ``v_heads`` value heads (claim B9).

    Args:
        d_model: width of the query input and of the output.
        n_heads: number of query heads.
        kv_heads: number of key heads (and value heads unless ``v_heads`` is given):
            ``n_heads`` for MHA (default), ``1`` for MQA, a divisor of ``n_heads`` for GQA.
        v_heads: number of value heads (default ``kv_heads``); ``1`` shares ``W_V``
            across all heads.
        d_head: width of one head (default ``d_model // n_heads``).
        d_context: width of the key/value input (default ``d_model``); set it for
            cross-attention from a memory of another width.
        bias: whether the four projections have biases.
        causal: mask future positions when no ``attn_mask`` is passed (decoder
            self-attention).
        dropout: attention-weight dropout, applied in training mode only.
        batch_first: ``True`` (default) for inputs and output ``(B, T, d)``; ``False`` for
            ``(T, B, d)``, the default layout of ``nn.MultiheadAttention`` (its
            ``batch_first=False``). Masks keep their layouts either way.

    Attributes:
        q_proj: ``Linear(d_model, n_heads·d_head)``.
        k_proj: ``Linear(d_context, kv_heads·d_head)``.
        v_proj: ``Linear(d_context, v_heads·d_head)``.
        out_proj: ``Linear(n_heads·d_head, d_model)``.

    Raises:
        ValueError: when a size is not a positive int, ``kv_heads``/``v_heads`` does not divide
            ``n_heads``, or ``d_model`` is not divisible by ``n_heads`` and no ``d_head`` is given;
            in ``load_state_dict``, for a state dict saved from another head layout
            (recorded in its metadata: ``n_heads``, ``kv_heads``, ``v_heads``, ``d_head``).

    Example:
        >>> attn = Attention(32, n_heads=4, v_heads=1)         # one W_V for all heads
        >>> tuple(attn.v_proj.weight.shape), tuple(attn.k_proj.weight.shape)
        ((8, 32), (32, 32))
        >>> attn(torch.randn(3, 5, 32)).shape
        torch.Size([3, 5, 32])
    """

    # a class default: an Attention pickled before stop 59 (``torch.save(model)``) has no
    # such attribute and was batch-first; its forward and repr raised AttributeError
    batch_first: bool = True

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        kv_heads: int | None = None,
        v_heads: int | None = None,
        d_head: int | None = None,
        d_context: int | None = None,
        bias: bool = True,
        causal: bool = False,
        dropout: float = 0.0,
        batch_first: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        d_model, n_heads = (
            int_arg(value, 1, f"Attention: {name} must be a positive int, got {value!r}")
            for name, value in (("d_model", d_model), ("n_heads", n_heads))
        )
        kv_heads = n_heads if kv_heads is None else kv_heads
        v_heads = kv_heads if v_heads is None else v_heads
        heads = []
        for name, value in (("kv_heads", kv_heads), ("v_heads", v_heads)):
            error = (
                f"Attention: {name} must divide n_heads={n_heads} (MHA: {n_heads}, MQA: 1, "
                f"GQA: a divisor in between), got {value!r}"
            )
            heads.append(int_arg(value, 1, error))
            if n_heads % heads[-1]:
                raise ValueError(error)
        kv_heads, v_heads = heads
        if d_head is None:
            if d_model % n_heads:
                raise ValueError(
                    f"Attention: d_model={d_model} is not divisible by n_heads={n_heads}; "
                    f"pass d_head= explicitly or change n_heads"
                )
            d_head = d_model // n_heads
        d_context = d_model if d_context is None else d_context
        d_head, d_context = (  # d_head=True built one-wide heads (stop 32)
            int_arg(value, 1, f"Attention: {name} must be a positive int, got {value!r}")
            for name, value in (("d_head", d_head), ("d_context", d_context))
        )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Attention: dropout must be in [0, 1), got {dropout!r}")
        self.d_model, self.n_heads, self.d_head, self.d_context = (
            d_model,
            n_heads,
            d_head,
            d_context,
        )
        self.kv_heads, self.v_heads = kv_heads, v_heads
        self.causal, self.dropout = flag("Attention", "causal", causal), float(dropout)
        # nn.MultiheadAttention reads (T, B, E) by default: a ported call without this was
        # read as (B, T, E), every position attending across the batch, no error (stop 59)
        self.batch_first = flag("Attention", "batch_first", batch_first)
        bias = flag("Attention", "bias", bias)
        kw = {"bias": bias, "device": device, "dtype": dtype}
        self.q_proj = nn.Linear(d_model, n_heads * d_head, **kw)
        self.k_proj = nn.Linear(d_context, kv_heads * d_head, **kw)
        self.v_proj = nn.Linear(d_context, v_heads * d_head, **kw)
        self.out_proj = nn.Linear(n_heads * d_head, d_model, **kw)
        self.reset_parameters()

    def _layout(self) -> dict[str, int]:
        """How the projections' rows split into heads, and which query heads share a K/V head."""
        return {
            "n_heads": self.n_heads,
            "kv_heads": self.kv_heads,
            "v_heads": self.v_heads,
            "d_head": self.d_head,
        }

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        meta = getattr(destination, "_metadata", None)
        if meta is not None:  # kept by torch.save, read back by _load_from_state_dict
            meta.setdefault(prefix[:-1], {})[HEADS_METADATA_KEY] = self._layout()

    def _tying_check_load(self, state_dict, prefix, local_metadata):
        """Refuse a state dict with a saved head layout that differs (raises ValueError).

        Run by the layer's own load and, before anything is copied, by a load into any
        module above it (``tying.core.slot_loads.LOAD_CHECK``): refused inside a container,
        the load changes nothing (stop 51; it had loaded the modules before this one).
        """
        # Attention(64, 8, kv_heads=2) and Attention(64, 16, kv_heads=4) have projections of
        # the same shapes: the rows loaded from one were read as other heads, and other
        # query heads shared each K/V head, with no error (stop 32). A state dict without
        # the record (older, or rebuilt as a plain dict) loads as before.
        # Only a load that holds projections is checked (stop 50): a partial load
        # (strict=False) of the rest of a model, this layer's entries dropped, was refused.
        saved = local_metadata.get(HEADS_METADATA_KEY) if local_metadata else None
        mine = self._layout()
        projections = tuple(f"{prefix}{p}_proj." for p in ("q", "k", "v", "out"))
        if (
            saved is not None
            and dict(saved) != mine
            and any(key.startswith(projections) for key in state_dict)
        ):
            diff = ", ".join(
                f"{k}={saved.get(k)!r} (this layer: {mine[k]!r})"
                for k in mine
                if saved.get(k) != mine[k]
            )
            raise ValueError(
                f"Attention at {prefix[:-1] or '<root>'!r}: the state dict was saved from an "
                f"attention with another head layout ({diff}), so its projection rows would be "
                f"read as other heads, shared by other query heads; build the layer with the "
                f"saved n_heads=, kv_heads=, v_heads= and d_head= and load into that"
            )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        self._tying_check_load(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )

    @property
    def kind(self) -> str:
        """``"MHA"``, ``"GQA"``, ``"MQA"`` or ``"shared-V"`` (a description for tables)."""
        if self.kv_heads == self.n_heads:
            return "MHA" if self.v_heads == self.n_heads else "shared-V"
        return "MQA" if self.kv_heads == 1 else "GQA"

    def fan_in(self) -> int:
        """Inputs of one unit of the Q/K/V projections: ``d_model`` (``d_context`` for K/V).

        Sharing a projection across heads or layers does not change how many inputs
        one of its outputs sums over (claim B15), so the initialisation does not either.
        """
        return self.d_model

    def reset_parameters(self) -> None:
        """Xavier-uniform projections (fan-in = input width, fan-out = output rows), zero biases.

        This is ``nn.MultiheadAttention``'s scheme. A projection shared by several
        heads keeps its own fan-in and fan-out: one shared row still sums ``d_model``
        inputs, so sharing changes nothing here.
        """
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            weight = proj._parameters.get("weight")
            if weight is not None:  # a tied slot is initialised through its owner
                nn.init.xavier_uniform_(weight)
            if proj._parameters.get("bias") is not None:
                nn.init.zeros_(proj.bias)

    def _heads(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, heads, self.d_head).transpose(1, 2)  # (B, heads, S, d_head)

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, heads, S, dh)`` → ``(B, n_heads, S, dh)``: head h reads group h // (n_heads/heads)."""
        heads = t.shape[1]
        if heads == self.n_heads:
            return t
        if heads == 1:  # a stride-0 view: one K or V read by every head, no copy
            return t.expand(-1, self.n_heads, -1, -1)
        return t.repeat_interleave(self.n_heads // heads, dim=1)

    def _check_mask(
        self, mask: torch.Tensor, b: int, t: int, s: int, name: str = "attn_mask"
    ) -> None:
        """Refuse a mask that SDPA would broadcast onto the wrong axes.

        SDPA right-aligns the mask against ``(B, H, T, S)``, so a ``(B, T, S)`` mask
        (``nn.MultiheadAttention``'s per-sequence layout) is read as one mask per
        *head*: with ``B == n_heads`` or ``B == 1`` it ran, and sequence 0's padding
        masked head 0 of every sequence (stop 26).
        """
        if mask.dtype != torch.bool and not mask.is_floating_point():
            # SDPA's "Expected attn_mask dtype to be bool or float", or in a causal layer an
            # int64 overflow from the causal fill (stop 35): say which mask and the fix
            raise TypeError(
                f"Attention: attn_mask must be boolean (True = may attend) or an additive float "
                f"mask, got {mask.dtype}; a 0/1 integer mask (1 = attend, as a tokenizer's "
                f"attention_mask) is attn_mask.bool()"
            )
        shape = tuple(mask.shape)
        # a 4-D mask may also have 1 query row: a key-padding mask (B, 1, 1, S), the layout
        # of transformers' extended attention masks, read by every query (stop 36; it was
        # refused with a fix that did not fit it)
        ok = (mask.ndim == 2 and shape == (t, s)) or (
            mask.ndim == 4
            and shape[3] == s
            and shape[2] in (1, t)
            and shape[0] in (1, b)
            and shape[1] in (1, self.n_heads)
        )
        if not ok:
            hint = (
                "for a per-sequence (B, T, S) mask pass mask[:, None], for a key-padding "
                "(B, S) mask mask[:, None, None, :] (True = may attend; a (B, S) mask with "
                "True = padding, nn.MultiheadAttention's, is key_padding_mask=mask)"
            )
            if mask.ndim == 3 and self.n_heads > 1 and shape == (b * self.n_heads, t, s):
                # nn.MultiheadAttention's 3-D layout: mask[:, None] (the hint above) is
                # refused again, and its bool True means masked (stop 59 review)
                hint = (
                    f"this is nn.MultiheadAttention's (B*n_heads, T, S) layout: pass "
                    f"mask.view({b}, {self.n_heads}, {t}, {s}) (a bool one inverted, "
                    f"~mask: True = may attend here, masked there)"
                )
            raise ValueError(
                f"Attention: attn_mask must be (T, S) = ({t}, {s}) or (B or 1, 1 or n_heads, "
                f"T or 1, S) = ({b} or 1, 1 or {self.n_heads}, {t} or 1, {s}), got {shape}; "
                f"{hint}"
            )
        if (
            mask.is_floating_point()
            and mask.device.type != "meta"
            and not torch.compiler.is_compiling()
            and not torch._C._are_functorch_transforms_active()
            and not torch.jit.is_tracing()
            and not (mask.is_cuda and torch.cuda.is_current_stream_capturing())
        ):
            # SDPA turns a NaN or +inf score into a NaN row with no error, and the NaN then
            # reaches every gradient of the batch (stop 40); -inf (masked) is fine. Not read
            # back where a value cannot be (compile, torch.func, tracing, CUDA graph capture)
            # one reduction on the usual path (NaN propagates through max, +inf is the max);
            # the entry is looked for only when there is one to name
            if mask.numel() and not bool(mask.max() < float("inf")):
                bad = torch.isnan(mask) | torch.isposinf(mask)
                where = tuple(int(i) for i in bad.nonzero()[0])
                value = mask[where].item()
                fix = "-inf (or a bool mask, False)"
                if name == "key_padding_mask":  # checked as (B, 1, 1, S): name its (b, s)
                    where, fix = (where[0], where[3]), "-inf (or a bool mask, True = padding)"
                raise ValueError(
                    f"Attention: an additive {name} must hold finite values or -inf (masked), "
                    f"got {value} at index {where}; SDPA would return NaN for that query row; "
                    f"use {fix} for keys a query may not read"
                )

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *mha_args: object,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        **mha_names: object,
    ) -> torch.Tensor:
        """Attend from ``x`` to ``context`` (``x`` itself when None).

        Args:
            x: queries ``(B, T, d_model)`` (``(T, B, d_model)`` with ``batch_first=False``).
            context: keys/values ``(B, S, d_context)`` (``(S, B, d_context)`` with
                ``batch_first=False``); None for self-attention.
            attn_mask: boolean ``(T, S)`` or ``(B, 1 or n_heads, T or 1, S)`` (True = may
                attend, as in ``F.scaled_dot_product_attention``; the *opposite* of a bool
                ``nn.MultiheadAttention`` attn_mask; ``(B, 1, 1, S)`` is a key-padding mask,
                read by every query) or an additive float mask. In a causal self-attention
                (``context`` None) it is combined with the causal rule (a key must be
                allowed by both); with a ``context`` it replaces ``causal``.
            key_padding_mask: ``(B, S)`` keys to ignore, as ``nn.MultiheadAttention``'s:
                boolean with True = padding (ignored), or an additive float mask. Combined
                with ``attn_mask`` and with the causal rule (it never replaces ``causal``).

        Returns:
            ``(B, T, d_model)`` (``(T, B, d_model)`` with ``batch_first=False``). A query row with no key to attend to (all masked) reads
            ``out_proj.bias``, with a zero (not NaN) gradient, as SDPA gives 0 for it;
            :meth:`unattended` says which rows those are.

        Raises:
            ValueError: on inputs or a mask of the wrong shape, naming expected and got.
            ValueError: on an additive mask holding NaN or +inf (SDPA returns NaN rows).
            TypeError: on a mask that is neither boolean nor floating point; for
                ``nn.MultiheadAttention``'s ``(query, key, value)`` call and its
                ``need_weights``, ``is_causal``, ``average_attn_weights``, naming the call
                here.

        Example:
            >>> attn = Attention(8, n_heads=2, batch_first=False)  # nn.MultiheadAttention's layout
            >>> pad = torch.tensor([[False, False, True], [False, False, False]])  # (B, S)
            >>> attn(torch.randn(3, 2, 8), key_padding_mask=pad).shape  # (T, B, d_model)
            torch.Size([3, 2, 8])
        """
        if mha_args or mha_names:  # nn.MultiheadAttention's call: say this one (stop 60)
            refuse_mha_call(x, context, mha_args, mha_names, self.causal)
        if not self.batch_first:
            # _attend lays the heads out time-first: a contiguous (T, B, d_model), as
            # nn.MultiheadAttention's (a transposed view failed .view(-1, d), stop 60)
            return self._forward(*self._batch_first(x, context), attn_mask, key_padding_mask)
        return self._forward(x, context, attn_mask, key_padding_mask)

    def _batch_first(self, x, context):
        """``(T, B, d)`` inputs as ``(B, T, d)`` views (refused by name when not 3-D)."""
        for name, t in (("x", x), ("context", context)):
            if t is not None and t.ndim != 3:
                raise ValueError(
                    f"Attention(batch_first=False): expected {name} of shape (seq, batch, "
                    f"{self.d_model if name == 'x' else self.d_context}), got {tuple(t.shape)}"
                    + _unbatched_hint(x, self.d_model, self.batch_first)
                )
        return x.transpose(0, 1), None if context is None else context.transpose(0, 1)

    def _forward(self, x, context, attn_mask, key_padding_mask) -> torch.Tensor:
        ctx = self._checked_inputs(x, context)
        if attn_mask is not None:
            self._check_mask(attn_mask, x.shape[0], x.shape[1], ctx.shape[1])
        user_mask = attn_mask
        attn_mask = self._with_padding(x, ctx, context, attn_mask, key_padding_mask)
        try:
            q = self._heads(self.q_proj(x), self.n_heads)  # (B, H, T, dh)
            k = self._heads(self.k_proj(ctx), self.kv_heads)  # (B, Hk, S, dh)
            v = self._heads(self.v_proj(ctx), self.v_heads)  # (B, Hv, S, dh)
            is_causal = self.causal and attn_mask is None
            if self.causal and attn_mask is not None and context is None:
                # a causal self-attention stays causal under a (padding) mask: before stop 26
                # the mask replaced the causal rule and every query read the keys after it
                attn_mask = _with_causal(attn_mask, x.shape[1])
            if is_causal and context is not None and ctx.shape[1] != x.shape[1]:
                raise ValueError(
                    f"Attention(causal=True): queries ({x.shape[1]}) and keys ({ctx.shape[1]}) differ "
                    f"in length; pass attn_mask= explicitly for a causal cross-attention"
                )
            drop = self.dropout if self.training else 0.0
            if not torch.compiler.is_compiling() and forward_ad_active(q, k, v, attn_mask):
                # SDPA's CPU flash kernel has no forward derivative (torch's "Trying to use
                # forward AD with _scaled_dot_product_flash_attention_for_cpu", stop 34): its
                # math backend, plain differentiable ops, serves forward AD and jacfwd
                from torch.nn.attention import SDPBackend, sdpa_kernel

                with sdpa_kernel(SDPBackend.MATH):
                    return self._attend(q, k, v, attn_mask, drop, is_causal)
            return self._attend(q, k, v, attn_mask, drop, is_causal)
        except CAUGHT as e:
            raise_if_mismatched(
                self, e, x, context, names=("x", "context"), devices={"attn_mask": attn_mask}
            )
            dev = x.device.type
            want = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
            for name, mask, hint in (
                ("attn_mask", user_mask, "True = may attend"),
                ("key_padding_mask", key_padding_mask, "True = padding"),
            ):
                if mask is not None and mask.is_floating_point() and mask.dtype != want:
                    raise TypeError(  # SDPA's message named no layer
                        f"Attention: an additive (float) {name} must have the queries' dtype "
                        f"{want}, got {mask.dtype}; pass {name}.to({want}) (or a bool "
                        f"mask, {hint})"
                    ) from e
            raise

    def _with_padding(self, x, ctx, context, attn_mask, key_padding_mask):
        """``attn_mask`` with ``key_padding_mask`` folded in (checked), or ``attn_mask``.

        A key-padding mask never lifts the causal rule: in a causal cross-attention with
        no ``attn_mask``, the causal ``(T, S)`` mask is written out so that both apply.
        """
        if key_padding_mask is None:
            return attn_mask
        b, t, s = x.shape[0], x.shape[1], ctx.shape[1]
        kpm = key_padding_mask
        if kpm.ndim != 2 or tuple(kpm.shape) != (b, s):
            hint = ""
            if self.batch_first and tuple(kpm.shape) == (t, b):  # (T, B, d) read as (B, T, d)
                hint = (
                    "; if x is (seq, batch, d_model), nn.MultiheadAttention's default layout, "
                    "build the layer with batch_first=False"
                )
            elif not self.batch_first and tuple(kpm.shape) == (t, b):
                # (B, T, d) read as (T, B, d): the B and S above are not the caller's
                hint = (
                    "; if x is (batch, seq, d_model), build the layer with batch_first=True "
                    "(the default)"
                )
            raise ValueError(
                f"Attention: key_padding_mask must be (B, S) = ({b}, {s}) (True = padding, as "
                f"nn.MultiheadAttention's), got {tuple(kpm.shape)}{hint}"
            )
        if kpm.dtype != torch.bool and not kpm.is_floating_point():
            raise TypeError(
                f"Attention: key_padding_mask must be boolean (True = padding, ignored) or an "
                f"additive float mask, got {kpm.dtype}; a tokenizer's 0/1 attention_mask "
                f"(1 = real token) is key_padding_mask=attention_mask == 0"
            )
        # (B, 1, 1, S): read by every head and query; bool True = may attend from here on
        kpm = ~kpm[:, None, None, :] if kpm.dtype == torch.bool else kpm[:, None, None, :]
        self._check_mask(kpm, b, t, s, name="key_padding_mask")
        if attn_mask is None and self.causal and context is not None:
            if s != t:
                raise ValueError(
                    f"Attention(causal=True): queries ({t}) and keys ({s}) differ in length; "
                    f"pass attn_mask= explicitly for a causal cross-attention"
                )
            attn_mask = torch.ones(t, s, dtype=torch.bool, device=kpm.device).tril()
        if attn_mask is None:
            return kpm
        if attn_mask.dtype == torch.bool and kpm.dtype == torch.bool:
            return attn_mask & kpm
        dtype = attn_mask.dtype if attn_mask.is_floating_point() else kpm.dtype
        return _additive(attn_mask, dtype) + _additive(kpm, dtype)

    def unattended(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Which query rows have no key to attend to, for the same arguments as :meth:`forward`.

        A query whose keys are all masked (``False`` in a bool mask, ``-inf`` in an additive
        one, after the causal rule of a causal self-attention) has no softmax to take. This
        layer follows :func:`torch.nn.functional.scaled_dot_product_attention`: that head's
        attention output is 0, so a row masked in every head reads ``out_proj.bias`` (zeros
        without a bias), and its gradient is 0 for the queries, keys and values: finite, never
        NaN. ``nn.MultiheadAttention`` agrees with ``need_weights=False`` (its SDPA route)
        and returns NaN with ``need_weights=True``. Such rows are usually padding
        (a left-padded causal batch masks its padding queries on purpose); use this mask to
        drop them from a loss or to tell them from real rows. An additive mask of large
        finite negatives (``torch.finfo(dtype).min``, as transformers' eager path) masks
        nothing here: such a row averages the values uniformly, as SDPA does.

        Args:
            x: queries, as in :meth:`forward` (``(T, B, d_model)`` with ``batch_first=False``).
            context: keys/values, as in :meth:`forward`; None for self-attention.
            attn_mask, key_padding_mask: as in :meth:`forward`.

        Returns:
            Bool ``(B, n_heads, T)`` (batch first whatever ``batch_first``): True where that head's query row has no key to attend
            to. ``.all(1)`` marks the output rows equal to ``out_proj``'s bias.

        Raises:
            ValueError, TypeError: as :meth:`forward` for inputs or a mask it refuses.

        Example:
            >>> attn = Attention(8, n_heads=2, causal=True)
            >>> keep = torch.tensor([[False, True, True], [True, True, True]])  # left padding
            >>> mask = keep[:, None, None, :]
            >>> attn.unattended(torch.randn(2, 3, 8), attn_mask=mask).all(1)
            tensor([[ True, False, False],
                    [False, False, False]])
        """
        if not self.batch_first:
            x, context = self._batch_first(x, context)
        ctx = self._checked_inputs(x, context)
        b, t, s = x.shape[0], x.shape[1], ctx.shape[1]
        if attn_mask is not None:
            self._check_mask(attn_mask, b, t, s)
        attn_mask = self._with_padding(x, ctx, context, attn_mask, key_padding_mask)
        if attn_mask is None:
            if self.causal and context is not None and s != t:
                raise ValueError(
                    f"Attention(causal=True): queries ({t}) and keys ({s}) differ in length; "
                    f"pass attn_mask= explicitly for a causal cross-attention"
                )
            # causal rows always keep their own (diagonal) key; S > 0 is checked above
            return torch.zeros((b, self.n_heads, t), dtype=torch.bool, device=x.device)
        allowed = attn_mask if attn_mask.dtype == torch.bool else attn_mask != float("-inf")
        if self.causal and context is None:
            allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=allowed.device).tril()
        return ~allowed.expand(b, self.n_heads, t, s).any(-1)  # (B, H, T)

    def _checked_inputs(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """The keys/values' input (``context``, or ``x`` itself), after the shape checks."""

        # with batch_first=False, x and context arrive here as (B, T, d) views: the shapes
        # are printed back in the caller's (T, B, d) layout
        def shown(t: torch.Tensor) -> tuple:
            return tuple(t.shape) if self.batch_first else tuple(t.transpose(0, 1).shape)

        if x.ndim != 3 or x.shape[-1] != self.d_model:
            want = "(batch, seq" if self.batch_first else "(seq, batch"
            raise ValueError(
                f"Attention: expected x of shape {want}, {self.d_model}), got {shown(x)}"
                + _unbatched_hint(x, self.d_model, self.batch_first)
            )
        ctx = x if context is None else context
        if ctx.ndim != 3 or ctx.shape[-1] != self.d_context or ctx.shape[0] != x.shape[0]:
            want = (
                f"({x.shape[0]}, seq, {self.d_context})"
                if self.batch_first
                else f"(seq, {x.shape[0]}, {self.d_context})"
            )
            raise ValueError(f"Attention: expected context of shape {want}, got {shown(ctx)}")
        if ctx.shape[1] == 0 and x.shape[1] > 0:
            # SDPA returns zeros over no keys: every query would read the out_proj bias
            raise ValueError(
                "Attention: the context has no positions (S = 0), so the queries have nothing to "
                "attend to; pass a context with at least one position"
            )
        return ctx

    def _attend(self, q, k, v, attn_mask, drop: float, is_causal: bool) -> torch.Tensor:
        """SDPA over the projected heads and the output projection: ``(B, T, d_model)``.

        ``(T, B, d_model)``, contiguous, with ``batch_first=False``.
        """
        if self.kv_heads == self.v_heads and self.kv_heads < self.n_heads and _SDPA_GQA:
            # SDPA broadcasts K/V heads itself: no repeated copy of K and V in memory.
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=drop, is_causal=is_causal, enable_gqa=True
            )
        else:
            k, v = self._expand(k), self._expand(v)  # (B, H, S, dh)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=drop, is_causal=is_causal
            )
        b, _, t, _ = out.shape
        if not self.batch_first:  # (T, B, d_model) from the one copy the heads need anyway
            return self.out_proj(out.permute(2, 0, 1, 3).reshape(t, b, self.n_heads * self.d_head))
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.d_head))

    def extra_repr(self) -> str:
        return (
            f"{self.kind}: d_model={self.d_model}, n_heads={self.n_heads}, kv_heads={self.kv_heads}, "
            f"v_heads={self.v_heads}, d_head={self.d_head}, causal={self.causal}"
            + (f", d_context={self.d_context}" if self.d_context != self.d_model else "")
            + (f", dropout={self.dropout}" if self.dropout else "")
            + ("" if self.batch_first else ", batch_first=False")
        )


def _unbatched_hint(x: torch.Tensor, d_model: int, batch_first: bool) -> str:
    """The batch of one that serves ``nn.MultiheadAttention``'s unbatched ``(seq, d_model)``
    call (stop 61: the refusal named the shape only)."""
    if x.ndim != 2 or x.shape[-1] != d_model:
        return ""
    axis, take = ("0", "out[0]") if batch_first else ("1", "out[:, 0]")
    return (
        f"; one unbatched sequence (seq, {d_model}), as nn.MultiheadAttention takes it, is a "
        f"batch of one here: pass x.unsqueeze({axis}) (a context likewise, a (S,) "
        f"key_padding_mask as key_padding_mask[None]) and take {take}"
    )


def _with_causal(mask: torch.Tensor, t: int) -> torch.Tensor:
    """``mask`` restricted to keys at or before each query: ``(…, T, T)``, boolean or additive."""
    allowed = torch.ones(t, t, dtype=torch.bool, device=mask.device).tril()  # (T, T)
    if mask.dtype == torch.bool:
        return mask & allowed
    return mask + torch.zeros((), dtype=mask.dtype, device=mask.device).masked_fill(
        ~allowed, float("-inf")
    )


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask (True = may attend) as 0 / -inf of ``dtype``; a float mask as it is."""
    if mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, float("-inf")
    )


def kv_sharing_plan(
    targets: str | list[str], like: str, *, parts: str | tuple[str, ...] = ("k_proj", "v_proj")
) -> Plan:
    """A plan tying the K/V projections of the attention modules ``targets`` to ``like``'s (claim B10).

    Wildcards pair as in :func:`tying.share`: ``"decoder.layers.*.cross_attn"`` with
    ``like="encoder.layers.*.self_attn"`` ties layer ``i`` to layer ``i``; a ``like``
    without wildcards ties every match to one module (sharing across layers too).

    Args:
        targets: module path pattern(s) of :class:`Attention` modules whose K/V are tied.
        like: the attention module (pattern) that owns the shared K/V projections.
        parts: which projections to tie (default K and V; ``"v_proj"`` or ``("v_proj",)``
            for V only).

    Returns:
        A :class:`tying.Plan`; ``plan.apply(model)`` ties them (all or nothing).

    Raises:
        ValueError: for an empty target list or an unknown part name.

    Example:
        >>> import torch, tying
        >>> model = torch.nn.ModuleDict({"enc": Attention(16, 2), "dec": Attention(16, 2),
        ...                              "cross": Attention(16, 2)})
        >>> _ = kv_sharing_plan(["dec", "cross"], like="enc").apply(model)
        >>> model.cross.k_proj.weight is model.enc.k_proj.weight
        True
        >>> c = tying.count(model); (c.logical, c.physical)
        (3264, 2176)
    """
    targets = [targets] if isinstance(targets, str) else list(targets)
    # one part as a str, as targets: "v_proj" was iterated as letters and refused with a
    # message that listed 'v_proj' as valid (stop 40)
    parts = (parts,) if isinstance(parts, str) else tuple(parts)
    if not targets:
        raise ValueError("kv_sharing_plan: give at least one target attention path")
    bad = [p for p in parts if p not in ("q_proj", "k_proj", "v_proj", "out_proj")]
    if bad or not parts:
        raise ValueError(
            f"kv_sharing_plan: parts must be among ('q_proj', 'k_proj', 'v_proj', 'out_proj'), got {parts!r}"
        )
    return Plan([share(f"{t}.{p}", like=f"{like}.{p}") for t in targets for p in parts])
