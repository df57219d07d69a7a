"""Vocabulary heads that ``get_output_embeddings`` does not name, or names wrongly, kept one row
per token through :func:`tying.hf.resize_token_embeddings` (stop 62, second wave).

HF's ``resize_token_embeddings`` resizes the input embedding and the module
``get_output_embeddings`` returns. Two families get that module wrong:

- DeBERTa / DeBERTa-v2 masked-LM with ``legacy=False`` return ``lm_predictions.lm_head.dense``,
  a hidden-to-hidden layer; the vocabulary projection is the word embedding itself
  (``matmul(h, word_embeddings.weight.t()) + lm_head.bias``). HF turned ``dense`` into
  (new vocabulary x hidden) and seated its resized bias as the vocabulary bias, so every
  forward after failed (``Given normalized_shape=[32] ... got input of size [2, 8, 74]``).
  :func:`square_output` tells such a layer; the resize then runs with no output embedding
  (:func:`output_embeddings_hidden`), ``dense`` stays as it was and the vocabulary bias
  beside it follows the resized embedding (:func:`~tying.interop.hf_head_bias.bias_beside`).
- LXMERT names no output embedding; its bias-free ``cls.predictions.decoder`` is the word
  embedding when tied by the config. Untied (``tie_word_embeddings=False``, or freed from a
  Plan before the resize) HF left it at the old rows while LXMERT's bias grew: every forward
  failed. :func:`unnamed_head` finds it and :func:`resize_unnamed_head` resizes it as HF
  resizes an untied head it names.

Needs the ``interop`` extra (``pip install 'tying[interop]'``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def square_output(emb_in: nn.Module | None, emb_out: nn.Module | None) -> bool:
    """Whether ``emb_out`` is a hidden-to-hidden ``Linear`` of the embedding's width, not a
    vocabulary projection (DeBERTa's ``lm_head.dense`` with ``legacy=False``).

    Example:
        >>> from torch import nn
        >>> square_output(nn.Embedding(10, 4), nn.Linear(4, 4)), square_output(nn.Embedding(10, 4), nn.Linear(4, 10))
        (True, False)
    """
    weight = getattr(emb_in, "weight", None)
    if not isinstance(emb_out, nn.Linear) or not isinstance(weight, torch.Tensor):
        return False
    if weight.dim() != 2:
        return False
    rows, width = weight.shape
    return tuple(emb_out.weight.shape) == (width, width) and rows != width


@contextlib.contextmanager
def output_embeddings_hidden(model: nn.Module) -> Iterator[None]:
    """HF's resize sees no output embedding (it resizes the input embedding only)."""
    had = "get_output_embeddings" in model.__dict__
    old = model.__dict__.get("get_output_embeddings")
    model.get_output_embeddings = lambda: None
    try:
        yield
    finally:
        if had:
            model.get_output_embeddings = old
        else:
            del model.get_output_embeddings


def unnamed_head(model: nn.Module, emb_in: nn.Module | None) -> nn.Linear | None:
    """The bias-free vocabulary head of a model whose ``get_output_embeddings`` is None (LXMERT).

    The ``Linear`` (not an embedding) holding ``emb_in``'s weight itself (tied); else the one
    bias-free ``Linear`` of the embedding's shape sitting beside a one-entry-per-token ``bias``
    on its owner (LXMERT's untied ``cls.predictions.decoder``). None when there is no such
    module, or more than one.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> head = nn.Module()
        >>> head.decoder = nn.Linear(4, 10, bias=False)
        >>> head.bias = nn.Parameter(torch.zeros(10))
        >>> unnamed_head(nn.Sequential(nn.Embedding(10, 4), head), nn.Embedding(10, 4)) is head.decoder
        True
    """
    weight = getattr(emb_in, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    tied = [m for m in model.modules() if isinstance(m, nn.Linear) and m.weight is weight]
    if tied:
        return tied[0]
    found = []
    for owner in model.modules():
        bias = owner._parameters.get("bias")
        if (
            not isinstance(bias, nn.Parameter)
            or bias.dim() != 1
            or bias.shape[0] != weight.shape[0]
        ):
            continue
        found += [
            child
            for child in owner._modules.values()
            if isinstance(child, nn.Linear)
            and child.bias is None
            and child.weight.shape == weight.shape
        ]
    return found[0] if len(found) == 1 else None


def resize_unnamed_head(
    model: nn.Module, head: nn.Linear, rows: int, mean_resizing: bool, retied: bool
) -> None:
    """Give ``head`` ``rows`` rows when HF left it at the old size, seated where it was.

    When a Plan re-ties it next (``retied``), kept rows are copied and added ones are zeros
    (the tie replaces them with the embedding's rows, and no random draw is spent); else it
    is resized as HF resizes an untied head it names (``_get_resized_lm_head``: kept rows
    unchanged, added ones drawn from the old rows' mean and covariance with
    ``mean_resizing``).
    """
    if head.weight.shape[0] == rows:
        return
    if retied or not hasattr(model, "_get_resized_lm_head"):
        new = nn.Linear(
            head.in_features, rows, bias=False, device=head.weight.device, dtype=head.weight.dtype
        )
        keep = min(rows, head.weight.shape[0])
        with torch.no_grad():
            new.weight.zero_()
            new.weight[:keep] = head.weight[:keep]
    else:
        new = model._get_resized_lm_head(head, rows, mean_resizing=mean_resizing)
    new.weight.requires_grad_(head.weight.requires_grad)
    for owner in list(model.modules()):
        for name, child in list(owner._modules.items()):
            if child is head:
                owner._modules[name] = new
