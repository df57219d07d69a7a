"""The advice a refused ``TrainableTokensConfig`` gets: only ways that are accepted.

A token adapter on a tie is refused (peft trains one use apart or fails), and the message
names the variant that keeps the tie: on HF's own embedding tie, the input embedding
alone, where peft gives every tied module the embedding's token delta. That advice was
one fixed text naming ``target_modules=['embed_tokens']``: on BART, mBART, Pegasus,
M2M100 and T5 (input embedding ``shared``) ``'embed_tokens'`` names the encoder's and
decoder's seats, refused again, and on Marian (whose encoder and decoder hold
``shared``'s Parameter in modules of their own: plain peft fails or trains one use apart)
every variant is refused, so the advice looped (stop 60). Each variant is now named only
when the same checks accept it on the model at hand, under the model's own name for
its input embedding.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

from torch import nn

from tying.core.errors import TieError
from tying.interop.lora_saved import _input_embedding_path

# measured, peft 0.21, a tiny tied Llama, token_indices=[3, 5, 7], 2 SGD steps (stop 49)
_WHAT_PEFT_DOES = (
    "TrainableTokensConfig: on the head alone, peft trains the head's rows alone and merging "
    "writes them into the embedding too, 33.6 away from the adapter model; naming the head "
    "and the embedding, peft's forward fails; on the embedding of a Plan tie, peft wraps the "
    "embedding alone and the head loses its source."
)


def tokens_hint(model: nn.Module, config, check: Callable[[nn.Module, object], None]) -> str:
    """The hint added to a refused ``TrainableTokensConfig``: what peft does, and the
    variants that ``check`` (the checks :func:`tying.interop.lora.get_peft_model` runs
    before peft, changing nothing) accepts on ``model``.

    Args:
        model: the model the refused config was given with (left as it is).
        config: the refused ``TrainableTokensConfig`` (its ``token_indices`` are reused).
        check: ``check(model, config)`` raises ``TieError`` (or another error) when
            ``get_peft_model`` would refuse ``config`` on ``model``.

    Returns:
        The hint, in parentheses.

    Example:
        >>> import torch
        >>> from tying.interop.lora_token_hint import tokens_hint
        >>> tokens_hint(torch.nn.Linear(2, 2), None, lambda m, c: None)[:40]
        '(TrainableTokensConfig: on the head alon'
    """
    emb_path = _input_embedding_path(model)
    if emb_path is None:
        return f"({_WHAT_PEFT_DOES})"
    indices = list(getattr(config, "token_indices", None) or [0])
    short = emb_path.rpartition(".")[2]
    name = next(
        (n for n in (short, emb_path) if _accepts(check, model, _tokens(config, [n], indices))),
        None,
    )
    if name is None:
        return (
            f"({_WHAT_PEFT_DOES} Targeting the input embedding {emb_path!r} alone (or None) is "
            f"refused on this model too (where other modules hold its Parameter in modules of "
            f"their own, as Marian's encoder and decoder, plain peft fails or trains one use "
            f"apart); follow the fix above, or train the embedding without a token adapter.)"
        )
    alone = f"target_modules=[{name!r}]"
    if _accepts(check, model, _tokens(config, None, indices)):
        alone += ", or None"
    text = (
        f"({_WHAT_PEFT_DOES} On HF's own embedding tie (config.tie_word_embeddings=True), "
        f"target the input embedding alone ({alone}): peft gives every tied module the "
        f"embedding's token delta, and it is accepted"
    )
    lora = _lora_tokens(model, name, indices)
    if lora is not None and _accepts(check, model, lora):
        text += (
            f"; or pass LoraConfig(target_modules=[...], trainable_token_indices={{{name!r}: "
            f"[...]}})"
        )
    return text + ".)"


def _accepts(check, model: nn.Module, config) -> bool:
    if config is None:
        return False
    try:
        with warnings.catch_warnings():  # a probe: its warnings are not the caller's
            warnings.simplefilter("ignore")
            check(model, config)
    except (TieError, ValueError, TypeError, KeyError, AttributeError):
        return False
    return True


def _tokens(config, targets: list[str] | None, indices: list[int]):
    out = copy.deepcopy(config)
    try:
        out.target_modules = targets
        out.token_indices = indices
    except (AttributeError, TypeError):
        return None
    return out


def _lora_tokens(model: nn.Module, name: str, indices: list[int]):
    """A ``LoraConfig`` with ``trainable_token_indices={name: indices}`` whose LoRA target is
    a ``Linear`` holding no tied tensor (None when the model has none)."""
    import peft

    seen: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        for p in m.parameters(recurse=False):
            seen[id(p)] = seen.get(id(p), 0) + 1
    for path, m in model.named_modules():
        if type(m) is nn.Linear and path and all(seen[id(p)] == 1 for p in m.parameters()):
            return peft.LoraConfig(
                r=2, target_modules=[path], trainable_token_indices={name: indices}
            )
    return None
