"""The logit bias a head's owner adds beside the head, kept one entry per head row on a resize.

ESM's ``EsmLMHead`` computes ``self.decoder(x) + self.bias``: the output embedding
(``lm_head.decoder``, tied to the word embeddings) has no bias of its own, and the
vocabulary-sized ``lm_head.bias`` sits on the module holding it. HF's
``resize_token_embeddings`` resizes the decoder (and the tied embedding) but not that
bias, so every forward after it failed (``RuntimeError: The size of tensor a (74) must
match the size of tensor b (61)``), with HF's own resize as with ours (stop 62).
:func:`owner_bias` finds such a bias before the resize and :func:`follow_head` gives it one
entry per row of the resized head, as HF gives a ``Linear`` head's own bias.

Needs the ``interop`` extra (``pip install 'tying[interop]'``).
"""

from __future__ import annotations

import torch
from torch import nn


def owner_bias(
    model: nn.Module, emb_out: nn.Module | None, emb_in: nn.Module | None = None
) -> tuple[nn.Module, nn.Parameter] | None:
    """The module holding ``emb_out`` and its ``bias`` Parameter, when that bias has one
    entry per row of the head and the head has no bias of its own (ESM's layout; a head's
    own bias HF resizes itself).

    Args:
        model: the model being resized.
        emb_out: its output embedding (``model.get_output_embeddings()``), or None.
        emb_in: its input embedding; when ``emb_out`` is None, the bias-free head reading
            this embedding's weight (LXMERT's ``cls.predictions.decoder``, which
            ``get_output_embeddings`` does not name) is taken as the head.

    Returns:
        ``(owner, bias)``, or None when no module holding the head has such a bias.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> head = nn.Module()
        >>> head.decoder = nn.Linear(4, 10, bias=False)
        >>> head.bias = nn.Parameter(torch.zeros(10))
        >>> owner, bias = owner_bias(nn.Sequential(head), head.decoder)
        >>> owner is head, tuple(bias.shape)
        (True, (10,))
    """
    if emb_out is None and isinstance(getattr(emb_in, "weight", None), torch.Tensor):
        emb_out = next(
            (
                mod
                for mod in model.modules()
                if not isinstance(mod, nn.Embedding)
                and getattr(mod, "weight", None) is emb_in.weight
            ),
            None,
        )
    weight = getattr(emb_out, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    if getattr(emb_out, "bias", None) is not None:
        # the head adds its own bias (BERT/RoBERTa untied: the owner's bias is then unused
        # by the forward, and HF leaves it as it is; so do we)
        return None
    return bias_beside(model, emb_out, weight.shape[0])


def bias_beside(
    model: nn.Module, head: nn.Module, rows: int
) -> tuple[nn.Module, nn.Parameter] | None:
    """The module holding ``head`` and its ``bias`` Parameter of ``rows`` entries, or None.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> owner = nn.Module()
        >>> owner.dense = nn.Linear(4, 4)
        >>> owner.bias = nn.Parameter(torch.zeros(10))
        >>> found = bias_beside(nn.Sequential(owner), owner.dense, 10)
        >>> found[0] is owner, bias_beside(owner, owner.dense, 4)
        (True, None)
    """
    for mod in model.modules():
        if not any(child is head for child in mod._modules.values()):
            continue
        bias = mod._parameters.get("bias")
        if isinstance(bias, nn.Parameter) and bias.dim() == 1 and bias.shape[0] == rows:
            return mod, bias
    return None


def follow_head(found: tuple[nn.Module, nn.Parameter], rows: int, mean_resizing: bool) -> None:
    """Give the owner's bias one entry per row of the resized head, when HF left it as it was.

    Kept entries are unchanged; added ones are the mean of the old entries with
    ``mean_resizing`` (HF's default, as it fills a ``Linear`` head's added bias entries)
    and zeros without it (a ``Linear`` bias's init). The bias is a new Parameter in the
    old one's dtype, device and ``requires_grad``, so an optimizer built before the resize
    is refused at its step (as for the Parameters HF replaces).

    Args:
        found: what :func:`owner_bias` returned before the resize.
        rows: the number of rows of the resized head.
        mean_resizing: the ``mean_resizing`` the resize was called with.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> head = nn.Module()
        >>> head.decoder = nn.Linear(4, 3, bias=False)
        >>> head.bias = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
        >>> found = owner_bias(head, head.decoder)
        >>> head.decoder = nn.Linear(4, 5, bias=False)  # what HF's resize does to the head
        >>> follow_head(found, rows=5, mean_resizing=True)
        >>> head.bias.tolist()
        [1.0, 2.0, 3.0, 2.0, 2.0]
    """
    owner, before = found
    now = owner._parameters.get("bias")
    if now is before and before.shape[0] == rows:
        return  # the size did not change
    if now is not before:
        # the family resized it itself (LXMERT): kept as it is when it fits the head; sized
        # to the unpadded count with pad_to_multiple_of (96 head rows, 66 entries: every
        # forward failed), or made float32 from bfloat16, it is completed as that family
        # completes it (zeros), in the old bias's dtype
        if not isinstance(now, torch.Tensor) or now.dim() != 1:
            return
        if now.shape[0] == rows and now.dtype == before.dtype and now.device == before.device:
            return
        before, mean_resizing = now, False
    keep = min(rows, before.shape[0])
    with torch.no_grad():
        new = torch.zeros(rows, dtype=found[1].dtype, device=found[1].device)
        new[:keep] = before[:keep].to(new.dtype)
        if mean_resizing and rows > keep:
            new[keep:] = before.float().mean().to(new.dtype)
    owner.bias = nn.Parameter(new, requires_grad=found[1].requires_grad)
