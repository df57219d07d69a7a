"""The groups C4 and D4 acting on images and on fields of group convolutions.

Element names, the Cayley and inverse tables, and :func:`group_act`, the action of one
element on a batch: what the group convolutions of :mod:`tying.nn.group_conv` are
equivariant under (moved here from that module at stop 35, unchanged).
"""

from __future__ import annotations

import torch

__all__ = ["GROUPS", "group_act", "group_elements"]

#: Element names of each group, in orientation-channel order. ``r^k m`` means: mirror, then rotate.
GROUPS: dict[str, tuple[str, ...]] = {
    "C4": ("e", "r", "r2", "r3"),
    "D4": ("e", "r", "r2", "r3", "m", "rm", "r2m", "r3m"),
}


def _check_group(group: str) -> tuple[str, ...]:
    if group not in GROUPS:
        raise ValueError(f"group must be one of {sorted(GROUPS)}, got {group!r}")
    return GROUPS[group]


def group_elements(group: str) -> tuple[str, ...]:
    """The element names of ``group`` in orientation-channel order.

    Args:
        group: ``"C4"`` or ``"D4"``.

    Returns:
        A tuple of names (``e`` first).

    Raises:
        ValueError: for an unknown group, listing the known ones.

    Example:
        >>> group_elements("C4")
        ('e', 'r', 'r2', 'r3')
    """
    return _check_group(group)


def _mirror_and_turns(name: str) -> tuple[bool, int]:
    mirror = name.endswith("m")
    core = name[:-1] if mirror else name
    turns = 0 if core in ("", "e") else (1 if core == "r" else int(core[1:]))
    return mirror, turns


def _spatial(x: torch.Tensor, name: str) -> torch.Tensor:
    """``g·x`` on the last two dims: mirror along the width (if any), then rotate."""
    mirror, turns = _mirror_and_turns(name)
    if mirror:
        x = torch.flip(x, (-1,))
    return torch.rot90(x, turns, (-2, -1)) if turns else x


def _compute_tables(group: str) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Cayley table ``mul[a][b] = index of a·b`` and ``inv[a]``, found by acting on a probe."""
    names = _check_group(group)
    probe = torch.arange(9.0, device="cpu").reshape(3, 3)  # no symmetry; CPU under a meta context
    images = [_spatial(probe, n) for n in names]

    def index_of(img: torch.Tensor) -> int:
        return next(i for i, other in enumerate(images) if torch.equal(img, other))

    mul = tuple(tuple(index_of(_spatial(_spatial(probe, b), a)) for b in names) for a in names)
    inv = tuple(row.index(0) for row in mul)
    return mul, inv


_TABLES = {group: _compute_tables(group) for group in GROUPS}


def _tables(group: str) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    _check_group(group)
    return _TABLES[group]


def group_act(x: torch.Tensor, element: str, group: str = "C4") -> torch.Tensor:
    """Apply a group element to an image or to a feature field with an orientation axis.

    On an image ``(…, H, W)`` (3-D or 4-D) the element moves pixels. On a field
    ``(B, C, |G|, H, W)`` it also permutes the orientation axis:
    ``(a·y)[g] = a·(y[a⁻¹g])``, which is how the outputs of the layers here move
    when their input is transformed by ``a``.

    Args:
        x: a 4-D image batch ``(B, C, H, W)`` or a 5-D field ``(B, C, |G|, H, W)``.
        element: an element name of ``group`` (see :data:`GROUPS`).
        group: ``"C4"`` or ``"D4"``.

    Returns:
        The transformed tensor (a new tensor; the input is unchanged).

    Raises:
        ValueError: for an unknown group or element, or a field whose orientation
            axis does not have ``|G|`` entries.

    Example:
        >>> img = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> group_act(img, "r", "C4")[0, 0]
        tensor([[1., 3.],
                [0., 2.]])
    """
    names = _check_group(group)
    if element not in names:
        raise ValueError(f"element must be one of {names} for group {group}, got {element!r}")
    if x.ndim == 5:
        if x.shape[2] != len(names):
            raise ValueError(
                f"group_act: a 5-D field needs |{group}| = {len(names)} orientations on dim 2, "
                f"got shape {tuple(x.shape)}"
            )
        mul, inv = _tables(group)
        a = names.index(element)
        perm = [mul[inv[a]][g] for g in range(len(names))]  # (a·y)[g] reads y[a⁻¹g]
        x = x[:, :, perm]
    elif x.ndim not in (3, 4):
        raise ValueError(
            f"group_act: expected an image (3-D/4-D) or a field (B, C, |G|, H, W), got "
            f"shape {tuple(x.shape)}"
        )
    return _spatial(x, element)
