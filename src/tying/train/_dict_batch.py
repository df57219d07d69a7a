"""What to do with a batch given as a dict, the way transformers users write it (stop 58).

``x`` is a tensor or a tuple (the model is called as ``model(x)`` or ``model(*x)``). A
dict was refused with "pass a tuple of tensors", which, followed in the dict's order, is
wrong for most transformers models: their ``forward`` does not take the dict's keys in
that order. GPT-2's second parameter is ``past_key_values`` (a crash: "'Tensor' object
has no attribute 'get_seq_length'"); Llama's third is ``position_ids``, so
``(input_ids, attention_mask, labels)`` read the labels as positions and gave other logits
(4.5e-4 off on a 2-layer model) with no error. The refusal now reads the model's
signature: it names the tuple when the keys are its first positional parameters in
order, and gives a wrapper that calls the model by keyword when they are not; ``labels``
are named as the targets ``y``.
"""

from __future__ import annotations

import inspect

from torch import nn

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_TARGETS = ("labels", "label", "targets")


def _signature(model):
    try:
        return inspect.signature(model.forward)
    except (TypeError, ValueError, AttributeError):
        return None


def _positional_names(model) -> list[str] | None:
    sig = _signature(model)
    if sig is None:
        return None
    return [n for n, p in sig.parameters.items() if p.kind in _POSITIONAL]


def _unknown_keys(model, keys) -> list[str]:
    """The keys the forward has no parameter for (none when it takes ``**kwargs``)."""
    sig = _signature(model)
    if sig is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return []
    return [k for k in keys if k not in sig.parameters]


def dict_batch_advice(x: dict, model: nn.Module | None) -> str:
    """The fix for a dict ``x``: the tuple in the forward's order, or a keyword wrapper.

    Returns:
        Text to append to the refusal (starts with ``"; "``).
    """
    keys = [str(k) for k in x]
    inputs = [k for k in keys if k not in _TARGETS]
    targets = [k for k in keys if k in _TARGETS]
    said = f"; the dict holds {keys}"
    if targets:
        said += (
            f"; {targets[0]} are the targets: pass them as y, and let loss_fn(output, y) give "
            f"one loss per example (a model's own loss from {targets[0]}= is the batch's "
            f"mean, not per example)"
        )
    names = _positional_names(model) if model is not None else None
    tup = ", ".join(f"x[{k!r}]" for k in inputs)
    if names is not None and inputs and names[: len(inputs)] == inputs:
        return said + f"; {type(model).__name__}.forward takes them in this order: x=({tup},)"
    unknown = _unknown_keys(model, inputs) if names else []
    if unknown:  # a keyword wrapper would fail too: name the order the forward takes
        return said + (
            f"; {type(model).__name__}.forward has no parameter {', '.join(unknown)} (it "
            f"takes ({', '.join(names)})): pass x as a tuple in that order"
        )
    order = ""
    if names:  # a forward(*args, **kwargs) names no order
        shown = ", ".join(names[: len(inputs) + 1])
        order = (
            f"{type(model).__name__}.forward takes ({shown}, ...) positionally, not the "
            f"dict's order, so a tuple in the dict's order hands an input to another "
            f"parameter; "
        )
    args = ", ".join(inputs) or "input_ids"
    kw = ", ".join(f"{k}={k}" for k in inputs) or "input_ids=input_ids"
    return said + (
        f"; {order}wrap the model so that it is called by keyword: "
        f"class ByName(torch.nn.Module): def __init__(self, m): super().__init__(); "
        f"self.m = m; def forward(self, {args}): return self.m({kw}); then pass "
        f"ByName(model) and x=({tup},) (loss_fn gets what the model returns: "
        f"output.logits for a transformers model)"
    )
