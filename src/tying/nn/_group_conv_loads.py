"""What a group conv's state dict records beyond its tensors, and the check on load (stop 57).

A tied :class:`~tying.nn.LiftingConv2d` stores one kernel block (``kernels.e``) and one
bias (``biases.e``) whatever its group: the group only says how many rotated (and
mirrored) copies of the block the layer reads. A state dict of a C4 layer therefore
loaded into a D4 layer with no error, and the layer computed another function (eight
orientations of the kernel instead of four; after a :class:`~tying.nn.GroupPool` the
output has the same shape and other values). The group is written to the state dict's
metadata (which ``torch.save`` keeps), and a load that holds kernels or biases saved
under another group is refused, naming both groups and the fix. A state dict without
the record (saved before stop 57, or rebuilt as a plain dict) loads as before.

:class:`~tying.nn.GroupConv2d` is refused across groups by its keys already (one block
per input orientation); the record is written and checked there too, so a
``strict=False`` load of a C4 layer's blocks into a D4 layer is refused as well instead
of filling half of the D4 blocks with C4 ones.

The check runs as ``_tying_check_load``: by the layer's own load and, before anything
is copied, by a load into any module above it (``tying.core.slot_loads.LOAD_CHECK``),
so a refused load changes nothing in a model holding the layer.
"""

from __future__ import annotations

from torch import nn

__all__ = ["GROUP_METADATA_KEY", "GroupRecord"]

#: the key under which a group conv's state-dict metadata records its group
GROUP_METADATA_KEY = "tying.group"


class GroupRecord(nn.Module):
    """Base of the group conv layers: records ``self.group`` in the state dict's metadata
    and refuses a load of kernels or biases saved under another group (ValueError)."""

    group: str

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        meta = getattr(destination, "_metadata", None)
        if meta is not None:  # kept by torch.save, read back by _tying_check_load
            meta.setdefault(prefix[:-1], {})[GROUP_METADATA_KEY] = self.group

    def _tying_check_load(self, state_dict, prefix, local_metadata):
        """Refuse a state dict whose kernels or biases were saved under another group.

        Only a load that holds this layer's kernels or biases is checked: a partial load
        (``strict=False``) of the rest of a model, this layer's entries dropped, loads as
        ``nn.Conv2d`` would.
        """
        saved = local_metadata.get(GROUP_METADATA_KEY) if local_metadata else None
        if saved is None or saved == self.group:
            return
        held = tuple(f"{prefix}{bank}." for bank in ("kernels", "biases"))
        if not any(key.startswith(held) for key in state_dict):
            return
        raise ValueError(
            f"{type(self).__name__} at {prefix[:-1] or '<root>'!r}: the state dict was saved "
            f"from a layer over group {saved!r} and this layer is over group {self.group!r}, "
            f"so its kernels would be read as the copies of another group (another function, "
            f"no error); build the layer with group={saved!r} and load into that, or, to "
            f"start this {self.group} layer from those kernels on purpose, load "
            f"dict(state_dict) (a plain dict keeps no record)"
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        self._tying_check_load(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )
