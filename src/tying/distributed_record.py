"""The state dict's tie record across ``td.ddp``'s wrapper (stop 59).

A tied model's state dict records its tied slots (:mod:`tying.core.tie_record`), and a
strict ``load_state_dict`` refuses a state dict saved with other ties: the ALBERT plan
``share("*", like="0")`` gives a depth-2 and a depth-3 model the same keys, so without the
record the deeper one loaded the shallower one's values and computed another function.

Under ``td.ddp`` the record sits at the wrapped model's own path, ``module``. torch's
``get_model_state_dict(ddp_model)`` (the state dict API that DCP and the FSDP docs use)
strips ``module.`` from the keys but not from ``_metadata``, and
``set_model_state_dict(ddp_model, sd)`` adds ``module.`` to the keys of a bare model's
state dict but not to its ``_metadata``. Either way the record sat at a path the check did
not read, and a state dict saved with other ties loaded with no error (a depth-2 stack's
``get_model_state_dict`` into a depth-3 one: the third layer read layer 0's values).

:func:`install` (called by ``td.ddp``) puts two hooks on the DDP wrapper: its state dict
records the wrapped model's tied slots at the wrapper's own path too (so the record is
where a bare model reads it once ``module.`` is gone from the keys), and its load checks
the wrapped model against a record that only a bare model's state dict holds.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from tying.core.tie_record import TIED_METADATA_KEY, check_load

__all__ = ["install"]


def install(wrapper: nn.Module) -> None:
    """Record and check the tie record through ``wrapper`` (a DDP wrapper of a tied model).

    Args:
        wrapper: the ``DistributedDataParallel`` module ``td.ddp`` built; its ``.module`` is
            the tied model.

    Returns:
        None.

    Raises:
        Nothing here; at ``wrapper.load_state_dict(sd)`` (strict) of a bare model's state
        dict re-keyed under ``module.`` (``set_model_state_dict``) that records other ties,
        the :class:`tying.TieError` of :func:`tying.core.tie_record.check_load`.

    Example:
        >>> import torch.distributed as dist, tying, tying.distributed as td
        >>> from torch import nn
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> _ = tying.Plan([tying.share("1", like="0")]).apply(m)
        >>> sd = td.ddp(m).state_dict()  # td.ddp calls install
        >>> sd._metadata[""][TIED_METADATA_KEY]
        ['1.bias', '1.weight']
        >>> dist.destroy_process_group()
    """
    wrapper.register_state_dict_post_hook(_record)
    wrapper.register_load_state_dict_pre_hook(_check)


def _record(wrapper, state_dict, prefix, local_metadata) -> None:
    # runs after the wrapped model's modules wrote their entries (``module``, ``module.x``):
    # each entry that records ties is copied to its path without ``module``, where a bare
    # model reads it once torch has taken ``module.`` off the keys
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is None or local_metadata is None:
        return
    inner = prefix + "module"
    for path, entry in list(metadata.items()):
        if not (_under(path, inner) and _records(entry)):
            continue
        rest = path[len(inner) + 1 :]
        if not rest:  # the wrapper's own entry: add the record, keep its version
            # the whole record: the tied slots and (stop 62) their relations and sources,
            # read from the entry the slots are read from
            local_metadata.update((k, v) for k, v in entry.items() if k.startswith("tying."))
        elif prefix + rest not in metadata:  # never over an entry of the wrapped model
            metadata[prefix + rest] = dict(entry)


def _check(wrapper, state_dict, prefix, local_metadata, *_) -> None:
    metadata = getattr(state_dict, "_metadata", None)
    if not metadata:
        return
    inner = prefix + "module"
    # a wrapper's own state dict has a metadata entry for the module of every key; a bare
    # model's re-keyed under module. does not (its entries stay at the bare paths), even
    # when that model has a real child named ``module`` whose record sits under ``module``
    # (review 59: Wrap(stack).module's depth-2 record set into td.ddp(Wrap(depth 3)))
    own = all(k.rpartition(".")[0] in metadata for k in state_dict if _under(k, inner))
    if own and any(_records(e) for path, e in metadata.items() if _under(path, inner)):
        return  # the wrapped model's own record: tying's own check reads it
    # the bare model's entries: under ``module`` too when the keys say they are its own
    bare = [
        (path, entry)
        for path, entry in metadata.items()
        if isinstance(path, str)
        and (path + ".").startswith(prefix)
        and (not own or not _under(path, inner))
    ]
    if not any(_records(entry) for _, entry in bare):
        return  # no record at all: a plain dict or an untied model's
    # a bare model's state dict whose keys torch put under ``module.``: check the wrapped
    # model against it as if it were loaded directly (keys and record at the same paths)
    view = OrderedDict((k[len(inner) + 1 :], v) for k, v in state_dict.items() if _under(k, inner))
    view._metadata = OrderedDict((path[len(prefix) :], entry) for path, entry in bare)
    check_load(wrapper.module, view)


def _under(path, inner: str) -> bool:
    return isinstance(path, str) and (path == inner or path.startswith(inner + "."))


def _records(entry) -> bool:
    return isinstance(entry, dict) and TIED_METADATA_KEY in entry
