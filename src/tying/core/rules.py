"""Rules: what a plan declares. ``share`` ties slots to a source; ``free`` unties them.

Rules are ordered; for each slot **the last matching rule wins**, so a general
rule can be followed by exceptions (``free("encoder.layers.*.norm.*")``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from tying.core.relations import Relation, Same

Like = str | Mapping[str, str] | Callable[[str], str] | None


@dataclasses.dataclass(frozen=True)
class Rule:
    """One declared rule. Build it with :func:`share` or :func:`free`."""

    target: str
    like: Like = None
    relation: Relation = dataclasses.field(default_factory=Same)
    kind: str = "share"

    def __repr__(self) -> str:
        if self.kind == "free":
            return f"free({self.target!r})"
        args = [repr(self.target)]
        if self.like is not None:
            shown = (
                repr(self.like) if isinstance(self.like, str) else f"<{type(self.like).__name__}>"
            )
            args.append(f"like={shown}")
        if type(self.relation) is not Same:
            args.append(f"relation={self.relation!r}")
        return f"share({', '.join(args)})"


def share(target: str, like: Like = None, relation: Relation | None = None) -> Rule:
    """Declare that the slots matching ``target`` read their value from ``like``.

    Args:
        target: a glob on dotted paths (``*`` one segment or one or more characters
            of one, ``**`` one or more segments; see :mod:`tying.core.patterns`). A
            module path ties every parameter inside it.
        like: the source: a pattern whose wildcards take the target's captures
            (``"enc.*.weight"``), a mapping ``{target_path: source_path}``, a
            callable ``target_path -> source_path``, or None to re-parametrise
            each target by ``relation`` alone (e.g. ``Mirrored()``, ``Hashed(B)``).
        relation: how the logical value is computed from the source
            (default :class:`~tying.Same`: the very same parameter object).

    Returns:
        A :class:`Rule` for :class:`~tying.Plan`.

    Raises:
        TypeError: when ``target`` (or a str ``like``) is not a non-empty str,
            ``relation`` is not a Relation, or ``like`` has the wrong type.
        ValueError: when neither ``like`` nor a re-parametrising relation is given.

    Example:
        >>> import tying
        >>> tying.share("lm_head.weight", like="embed.weight")
        share('lm_head.weight', like='embed.weight')
    """
    _check_pattern("share", "target", target)
    if isinstance(like, str):
        _check_pattern(f"share({target!r})", "like", like)
    relation = Same() if relation is None else relation
    if not isinstance(relation, Relation):
        raise TypeError(f"share({target!r}): relation must be a tying relation, got {relation!r}")
    if like is not None and not isinstance(like, (str, Mapping)) and not callable(like):
        raise TypeError(
            f"share({target!r}): like must be a str, a mapping or a callable, got {like!r}"
        )
    if like is None and type(relation) is Same:
        raise ValueError(
            f"share({target!r}) needs a source: pass like='other.path', or a relation that "
            f"re-parametrises the slot by itself (Mirrored(), Hashed(buckets), ...)"
        )
    return Rule(target, like, relation, "share")


def free(target: str) -> Rule:
    """Declare that the slots matching ``target`` are independent (untied).

    Placed after a ``share`` rule it makes exceptions, e.g. per-layer norms in an
    ALBERT-style stack.

    Returns:
        A :class:`Rule` for :class:`~tying.Plan`.

    Raises:
        TypeError: when ``target`` is not a non-empty str.

    Example:
        >>> import tying
        >>> tying.free("encoder.layers.*.norm")
        free('encoder.layers.*.norm')
    """
    _check_pattern("free", "target", target)
    return Rule(target, None, Same(), "free")


def _check_pattern(where: str, field: str, value) -> None:
    # stop 34: share(3, ...), share("", ...) and free(None) were built, and failed at apply
    # as "a pattern must be a non-empty str, got 3", naming neither the rule nor the field
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"{where}: {field} must be a non-empty str (a dotted path or a glob such as "
            f"'layers.*.weight'), got {value!r} ({type(value).__name__})"
        )
