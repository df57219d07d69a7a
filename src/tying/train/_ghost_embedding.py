"""Which ``nn.Embedding`` settings ghost clipping refuses, each with advice that works.

Ghost clipping takes an Embedding's per-example gradient norm from the tokens it reads
and the gradient of its output. Three settings break that or what follows it:

- ``max_norm``: the forward renormalises, in place, the rows the batch reads (frozen or
  trainable: a write of the private batch outside epsilon). ``mode="vmap"`` refuses it
  too (Opacus' hooks a trained one), so the advice is the one that runs everywhere.
- ``scale_grad_by_freq`` on a trained weight: each token's gradient divided by its count
  in the batch, which the Gram matrices do not model; ``mode="vmap"`` runs each example
  alone and matches a per-example loop.
- ``sparse=True`` on a trained weight: the clipped sum's backward makes a sparse
  ``.grad``; ``mode="vmap"`` refuses it as well, so the fix is ``sparse=False``.

A frozen Embedding with ``sparse`` or ``scale_grad_by_freq`` has no gradient to get wrong
and is taken. Before stop 61 all three were refused together, trainable or frozen, with
"use mode='vmap'", which refused ``max_norm`` and ``sparse`` again.
"""

from __future__ import annotations

from torch import nn


def check_embedding(mod: nn.Embedding, path: str, trainable: bool) -> None:
    """Refuse an ``nn.Embedding`` setting ghost clipping cannot take, naming it.

    Args:
        mod: the Embedding.
        path: its path in the model.
        trainable: whether its weight is one of the parameters being clipped.

    Raises:
        ValueError: ``max_norm`` set (any weight), or ``sparse``/``scale_grad_by_freq``
            on a trainable weight; the message names the setting and a fix that runs.

    Example:
        >>> import torch
        >>> check_embedding(torch.nn.Embedding(5, 3, sparse=True), "emb", trainable=False)
        >>> check_embedding(torch.nn.Embedding(5, 3, sparse=True), "emb", trainable=True)
        Traceback (most recent call last):
        ...
        ValueError: ghost clipping: embedding emb has sparse=True: ...
    """
    where = f"ghost clipping: embedding {path or '<root>'}"
    if mod.max_norm is not None:
        raise ValueError(
            f"{where} has max_norm={mod.max_norm}: its forward renormalises, in place, the "
            f"rows the batch reads (a write of the private batch outside epsilon), which "
            f"mode='vmap' refuses too (and Opacus' hooks, on a trained weight); set "
            f"max_norm=None and renormalise after each step instead "
            f"(torch.embedding_renorm_(weight, ids, max_norm, 2.0) under torch.no_grad())"
        )
    if not trainable:
        return
    if mod.sparse:
        raise ValueError(
            f"{where} has sparse=True: the clipped sum's gradient would be a sparse tensor, "
            f"which no per-example way forms (mode='vmap' refuses it too); set sparse=False "
            f"(DP-SGD's noise makes every row's gradient dense anyway), or freeze it "
            f"(requires_grad_(False))"
        )
    if mod.scale_grad_by_freq:
        raise ValueError(
            f"{where} has scale_grad_by_freq=True: each token's gradient is divided by its "
            f"count in the batch, which ghost clipping's norms do not model; use "
            f"mode='vmap' (each example's own counts, as a per-example loop), or set "
            f"scale_grad_by_freq=False"
        )
