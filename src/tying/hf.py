"""``tying.hf``: the Hugging Face entry points, an alias of :mod:`tying.interop.hf`.

Example:
    >>> import tying.hf
    >>> callable(tying.hf.from_pretrained) and callable(tying.hf.save_pretrained)
    True
"""

from tying.interop.hf import (
    CONFIG_KEY,
    from_pretrained,
    hf_ties_plan,
    logical_state_dict,
    plan_from_json,
    plan_to_json,
    resize_token_embeddings,
    save_pretrained,
)

__all__ = [
    "CONFIG_KEY",
    "from_pretrained",
    "hf_ties_plan",
    "logical_state_dict",
    "plan_from_json",
    "plan_to_json",
    "resize_token_embeddings",
    "save_pretrained",
]
