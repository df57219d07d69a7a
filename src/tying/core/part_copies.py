"""A deep copy of a piece of a tied model: the ties rebased onto the piece, or refused.

``copy.deepcopy(model.decoder)`` copies tied slots whose source may lie outside the piece
(the copy would read a hidden private copy of the whole model: refused, stop 31), or
inside it (the slot's anchor and paths are rebased onto the piece). The piece may also be
a new container of the model's modules (``model[0:3]``, ``nn.Sequential(model[2],
model[0])``), which is no part of the model: found from the running ``copy.deepcopy``
call (stop 38; it was refused as a piece without the source).
"""

from __future__ import annotations

import copy
import sys
from typing import TYPE_CHECKING, Any

from torch import nn

from tying.core.errors import TieError
from tying.core.opacus_guards import release_opacus_wrapper

if TYPE_CHECKING:
    from tying.core.slots import Slot


def rebased_for_part(slot: Slot, memo: dict) -> dict[str, Any]:
    """What a deep copy of ``slot`` changes: nothing when the module the plan was applied
    to is copied too; when only a piece of it is (``copy.deepcopy(model.decoder)``), the
    anchor and paths relative to that piece, or a :class:`TieError` when the tie's source
    lies outside it.

    ``copy.deepcopy`` records every object it has started copying in ``memo`` before it
    copies that object's contents, so the modules above this slot's module that are in
    ``memo`` are the ones being copied; the highest of them is the piece.
    """
    from tying.core.slots import _name_in

    mod_path, src_path = slot.paths
    if not src_path:  # its own storage: a parameter of the tied module, copied with it
        return {}
    links = slot._links() if slot.anchor is not None else ()
    root = links[0][0] if links else slot.source_module
    if id(root) in memo:
        return {}
    chain, mod = [], root  # the modules from the plan's root down to the tied module
    names = mod_path.split(".") if mod_path else []
    for i, name in enumerate(names):
        mod = mod._modules.get(name) if isinstance(mod, nn.Module) else None
        if mod is None:
            return {}  # moved since the tie was made: a read names what broke
        chain.append((".".join(names[: i + 1]), mod))
    part_path, part = next(((p, m) for p, m in chain if id(m) in memo), (None, None))
    if part is None:
        return {}  # not copied through a module (the slot alone): as it is
    where = next((p for p, m in part.named_modules() if m is slot.source_module), None)
    if where is None:
        # The piece may be a new module that holds the tied module and its source but is
        # not part of the model itself: model[0:3] (a new nn.Sequential of the same
        # children) was refused although the copy holds the source (stop 38).
        for top in _copied_modules(memo):  # the highest one that holds both ends
            found = _paths_in(top, (chain[-1][1], slot.source_module))
            if found is not None:
                part, part_path = top, None
                mod_path, where = found
                break
    if where is None:
        target = f"{mod_path}.{_name_in(chain[-1][1], slot)}"
        caller = _opacus_caller()
        if caller is not None:
            # Opacus' GradSampleModule deep-copies a layer it has no sampler for (its
            # functorch fallback): the user never called deepcopy, and the fix below sent
            # them the wrong way; Opacus has put hooks on the model by then (stop 54), and
            # its half-built wrapper, which no one holds, left them there (stop 55)
            released = release_opacus_wrapper()
            where = (
                "on this model (Opacus' hooks and parameter marks were taken off it: it is "
                "as it was) or on a freshly built model"
                if released
                else "on a freshly built model: Opacus may already have put its hooks on this one"
            )
            raise TieError(
                f"Opacus ({caller}) deep-copies {part_path!r} to sample its gradients, but "
                f"{target} reads {src_path} through a tie (via {slot.relation!r}) that "
                f"Opacus' GradSampleModule cannot see. Use tying.train.grad_sample_module"
                f"(model) (or tying.train.DPSGD) {where}"
            )
        fusing = _fusion_caller()
        if fusing is not None:
            # fuse_conv_bn_eval / fuse_linear_bn_eval deep-copy the layer to fold the batch
            # norm into it: the message named a deepcopy the user never called (stop 57)
            raise TieError(
                f"torch.nn.utils.fusion.{fusing} deep-copies {part_path!r} to fold the batch "
                f"norm into its weight, but {target} reads {src_path} through a tie (via "
                f"{slot.relation!r}): the fused layer would get a weight of its own and leave "
                f"the tie (a hand-tied model's fused layer stops sharing {src_path} without a "
                f"word). Nothing was changed. To fuse, untie that slot first "
                f"(tying.Plan([tying.free({target!r})]).apply(model)), or leave the batch norm "
                f"unfused"
            )
        raise TieError(
            f"copy.deepcopy of {part_path!r}, a part of a tied model, would copy {target} "
            f"without its tie's source {src_path} (via {slot.relation!r}), which lies outside "
            f"{part_path!r}: the copy would read a hidden private copy of the whole model, "
            f"which its parameters(), optimizers, state_dict() and tying.save do not see "
            f"(training the copy would never update that weight). Copy the module the plan "
            f"was applied to (copy.deepcopy(model)); for a standalone {part_path!r} with "
            f"weights of its own, untie a copy first: c = copy.deepcopy(model); "
            f"tying.untie(c); then use c.{part_path}"
        )
    hops = where.split(".") if where else []
    anchor = tuple(
        (
            part.get_submodule(".".join(hops[:i])),
            hops[i],
            part.get_submodule(".".join(hops[: i + 1])),
        )
        for i in range(len(hops))
    )
    rest = mod_path if part_path is None else mod_path[len(part_path) + 1 :]
    source = f"{where}.{slot.source_name}" if where else slot.source_name
    return {"anchor": anchor or None, "paths": (rest, source)}


def _fusion_caller(depth: int = 40) -> str | None:
    """The ``torch.nn.utils.fusion`` function running this deepcopy (a refusal's message
    only), or None."""
    import sys

    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return None
        if frame.f_globals.get("__name__") == "torch.nn.utils.fusion":
            return frame.f_code.co_name
        frame = frame.f_back
    return None


def _opacus_caller(depth: int = 60) -> str | None:
    """The Opacus module whose code is running this deepcopy (a refusal's message only;
    never on a copy that goes through), or None."""
    import sys

    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return None
        name = frame.f_globals.get("__name__", "")
        if name == "opacus" or name.startswith("opacus."):
            return name
        frame = frame.f_back
    return None


def _copied_modules(memo: dict) -> list[nn.Module]:
    """The modules the running ``copy.deepcopy`` call (the one that owns ``memo``) is
    copying, outermost first: the module it was given, or, when it was given a container
    (``copy.deepcopy({"m": model[0:3]})``, refused before stop 38's second round), the
    modules in that container on the way down to this slot."""
    frame, tops = sys._getframe(1), []
    while frame is not None:
        if frame.f_code is copy.deepcopy.__code__ and frame.f_locals.get("memo") is memo:
            x = frame.f_locals.get("x")
            if isinstance(x, nn.Module):
                tops.append(x)
        frame = frame.f_back
    return tops[::-1]


def _paths_in(top: nn.Module, mods: tuple[nn.Module, nn.Module]) -> tuple[str, str] | None:
    """The paths of ``mods`` (the tied module, its source) inside ``top``; None unless both
    lie in it."""
    found: dict[int, str] = {}
    for path, m in top.named_modules(remove_duplicate=False):
        found.setdefault(id(m), path)
    if any(id(m) not in found for m in mods):
        return None
    return found[id(mods[0])], found[id(mods[1])]
