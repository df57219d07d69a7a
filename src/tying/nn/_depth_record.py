"""The depth of a weight-tied stack, recorded in its state dict and checked on load (stop 59).

A weight-tied ``Stack`` or ``TiedResidualNet`` stores one layer whatever its depth, so
its state dict has the same keys at depth 4 and at depth 6: ``load_state_dict`` loaded
one into the other with no error and the model applied the saved layer another number
of times (another function), while ``tying.load`` refused the same file. The same
mistake on an untied stack is refused by torch's key check. Both routes now refuse it,
naming the deliberate way: a plain ``dict`` (or ``safetensors.torch.load_file``) holds no
record and loads at any depth, as before.
"""

from __future__ import annotations

from torch import nn

#: the key under which a stack's state-dict metadata records its depth
DEPTH_METADATA_KEY = "tying.depth"


def record_depth(depth: int, destination, prefix: str) -> None:
    """Write ``depth`` into the state dict's metadata for the module at ``prefix``."""
    meta = getattr(destination, "_metadata", None)
    if meta is not None:  # kept by torch.save and tying.save, read back on load
        meta.setdefault(prefix[:-1], {})[DEPTH_METADATA_KEY] = depth


def check_depth(
    module: nn.Module, depth: int, state_dict, prefix: str, local_metadata, how: str
) -> None:
    """Refuse a state dict saved at another depth whose keys fit ``module`` only by the tie.

    Only a load whose keys under ``prefix`` are exactly this module's is refused: it would
    pass torch's strict key check though the depths differ, which only a tie (each layer
    reading one layer's parameters) can make happen. A load with other keys (an untied
    stack of another depth, a partial ``strict=False`` load of some layers, or one
    without this module's entries) is left to torch's checks, as before.

    Args:
        how: how to build the saved depth, with ``{}`` for it (``"TiedResidualNet(...,
            depth={})"``).

    Raises:
        ValueError: naming both depths, what the load would compute, and the two fixes.
    """
    saved = local_metadata.get(DEPTH_METADATA_KEY) if local_metadata else None
    if saved is None or saved == depth:
        return
    given = {k[len(prefix) :] for k in state_dict if k.startswith(prefix)}
    if not given or given != set(module.state_dict(keep_vars=True)):
        return
    name = type(module).__name__
    raise ValueError(
        # the saved stack need not be tied (an untied depth-1 one has a tied one's keys):
        # the message says what the keys are, not how the saved one was built (review)
        f"{name} at {prefix[:-1] or '<root>'!r}: the state dict was saved from a {name} of "
        f"depth {saved} (this one: depth {depth}); its keys fit only because a weight-tied "
        f"one stores one layer's parameters at any depth, so the load would pass and the "
        f"model apply the saved layer {depth} times instead of {saved}, another function; "
        f"build {how.format(saved)} "
        f"to get the saved model, or, to run the saved layer at depth {depth} on purpose, "
        f"load a plain dict: model.load_state_dict(dict(state_dict)) (from a tying.save "
        f"file: model.load_state_dict(safetensors.torch.load_file(path)))"
    )
