"""``nn.Embedding`` / ``nn.EmbeddingBag`` keywords, refused by the hashed layers with what
to use here (stop 60).

A model ported from ``nn.Embedding(V, D, padding_idx=0)`` or
``nn.EmbeddingBag(V, D, mode="sum")`` got Python's bare "unexpected keyword argument"
for the first, and for the second "mode must be one of ('entry', 'block', 'qr')": here
``mode=`` picks the hashing and the pooling is ``pooling=``, which the message did not say.
"""

from __future__ import annotations

from tying.nn._args import refuse_foreign_defaults

__all__ = ["refuse_bag_mode", "refuse_embedding_keywords"]

_PADDING = (
    "a hashed table has no row of its own to keep at zero (every row reads buckets that "
    "other rows share); zero the padding positions' outputs instead: "
    "out * (ids != padding_idx).unsqueeze(-1)"
)
_PADDING_BAG = (
    "a hashed table has no row of its own to keep at zero (every row reads buckets that "
    "other rows share); leave the padding ids out of the bags (1-D ids with offsets), or "
    "with pooling='sum' pass per_sample_weights=(ids != padding_idx).to(the layer's dtype)"
)
_MAX_NORM = (
    "rows are not renormalised in place (a row's values are buckets that other rows share, "
    "so renormalising it would rescale them); scale the looked-up rows instead: "
    "out * (max_norm / out.norm(dim=-1, keepdim=True).clamp_min(1e-7)).clamp(max=1)"
)
_EMBEDDING_NAMES = {
    "padding_idx": _PADDING,
    "max_norm": _MAX_NORM,
    "norm_type": _MAX_NORM + " (with out.norm(p=norm_type, ...))",
    "scale_grad_by_freq": "gradients are not scaled by the ids' frequency in the batch "
    "(the buckets an id reads are shared with other ids); drop the keyword",
    "_weight": "a hashed table is not built from a dense one; build the layer, then "
    "train or load its weight_physical",
    "_freeze": "freeze the stored values with layer.requires_grad_(False)",
}
_BAG_NAMES = {
    **_EMBEDDING_NAMES,
    "padding_idx": _PADDING_BAG,
    "include_last_offset": "offsets here are the start of each bag "
    "(include_last_offset=False); with offsets that end in len(input), pass offsets[:-1]",
}

# nn.Embedding(Bag)'s defaults: no padding row, no renormalising, plain gradients, bag
# starts (a port written out in full, padding_idx=None, was advised to zero padding outputs)
_DEFAULTS = {
    "padding_idx": None,
    "max_norm": None,
    "norm_type": 2.0,
    "scale_grad_by_freq": False,
    "_weight": None,
    "_freeze": False,
    "include_last_offset": False,
}


def refuse_embedding_keywords(owner: str, given: dict, bag: bool) -> None:
    """Refuse ``nn.Embedding``'s (``bag``: ``nn.EmbeddingBag``'s) keywords by name.

    Raises:
        TypeError: whenever ``given`` is not empty (any other name: Python's message).
    """
    library = "nn.EmbeddingBag" if bag else "nn.Embedding"
    refuse_foreign_defaults(
        owner, given, _BAG_NAMES if bag else _EMBEDDING_NAMES, _DEFAULTS, library
    )


def refuse_bag_mode(owner: str, mode: object) -> None:
    """Refuse ``nn.EmbeddingBag``'s ``mode='sum'|'mean'|'max'`` naming ``pooling=``.

    Raises:
        ValueError: for one of those three modes.
    """
    if isinstance(mode, str) and mode in ("sum", "mean", "max"):
        fix = (
            "max pooling is not provided (pooling='sum' or 'mean')"
            if mode == "max"
            else f"pass pooling={mode!r} (and mode='entry', 'block' or 'qr' for the hashing)"
        )
        raise ValueError(
            f"{owner}: mode= here picks the hashing ('entry', 'block' or 'qr'), got "
            f"{mode!r}, nn.EmbeddingBag's pooling mode; {fix}"
        )
