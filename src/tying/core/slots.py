"""How a tied slot is served: one owner, resolved at read time.

A tied slot (``lm_head.weight``) is not stored on its module. The module's class
is switched to a small subclass with a property for that name, and the property
reads the source (``getattr(embed, "weight")``) and applies the relation. So:

- the physical parameter has exactly one owner: ``parameters()``, optimizers,
  ``state_dict()`` and files hold it once;
- anything that replaces the owner's tensor (``.to()``, ``.to_empty()``,
  ``load_state_dict(assign=True)``, ``torch.func.functional_call``, FSDP) is
  seen by every use at the next read, so the tie cannot silently break;
- with ``Same`` the property returns the very same ``nn.Parameter`` object.

``torch.nn.utils.parametrize`` works the same way (a per-class property) but
stores its ``original`` inside the tied module, which is a second owner; here
the owner stays where the user put it.

Why the class is swapped (STYLE.md advises against it, so the reason is here):
``nn.Module`` keeps parameters in ``_parameters`` and answers ``module.weight``
through ``__getattr__``, which only runs when normal lookup fails. To compute a
value *at every read* for one instance, Python needs a data descriptor (a
property) on the instance's *class*; putting one on ``nn.Linear`` itself would
change every Linear in the process. So each tied module gets a small subclass
(``TiedLinear``, in this module, one per base class and set of slot names,
cached in ``_CLASSES`` so that ``type(a) is type(b)`` for equally tied modules and
compiled graphs are reused). The alternatives were weighed: parametrize (a second
owner of the physical tensor, and ``parametrizations.weight.original`` keys in
every state dict), or forward hooks that write ``module.weight`` before each call
(a stale value outside ``forward``, and they break ``torch.func.functional_call``).
The subclass keeps ``isinstance`` true, pickles and deep-copies through
``__reduce_ex__`` (rebuilt from the base class and slot names), and refuses
assignments that would silently break a tie.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import secrets
import sys
from typing import Any

import torch
from torch import nn

from tying.core.declared_roots import remember_anchor as _remember_anchor
from tying.core.eager_quant import check_qconfig_set as _check_qconfig_set
from tying.core.errors import TieError
from tying.core.freezing import requires_grad_ as _requires_grad_
from tying.core.freezing import zero_grad as _zero_grad
from tying.core.func_calls import check_global_prune_read as _check_global_prune_read
from tying.core.func_calls import check_source_swap as _check_source_swap
from tying.core.func_calls import in_functional_swap as _in_functional_swap
from tying.core.func_calls import own_seen as _own_seen
from tying.core.func_calls import slot_value_refusal as _slot_value_refusal
from tying.core.lost_writes import _PROBE_AT as _PROBE_AT
from tying.core.lost_writes import KEPT_MAX as KEPT_MAX
from tying.core.lost_writes import PROBE_SIZE as PROBE_SIZE
from tying.core.lost_writes import (
    _equal_now,
    _probe,
    _replaced_view,
    _same_values,
    _shares_storage,
    _still_held,
    _version,
)
from tying.core.lost_writes import _let_go_at_backward as _let_go_at_backward
from tying.core.lost_writes import _own_source as _own_source
from tying.core.lost_writes import _own_uses as _own_uses
from tying.core.lost_writes import _span as _span
from tying.core.lost_writes import _storage_uses as _storage_uses
from tying.core.lost_writes import forget_source_keys as _forget_source_keys
from tying.core.opacus_guards import expanded_weight_error as _expanded_weight_error
from tying.core.outside import (
    ORIG,
    WRAPPER_SEGMENTS,
    check_prune_query,
    check_register,
    pruned_names,
    source_value,
)
from tying.core.part_conversion import check_part_conversion as _check_part_conversion
from tying.core.part_copies import rebased_for_part as _rebased_for_part
from tying.core.part_pickles import check_unpickled_piece as _check_unpickled_piece
from tying.core.part_pickles import piece_without_source as _piece_without_source
from tying.core.relations import Relation, Same
from tying.core.reparametrized import _REMOVERS
from tying.core.reparametrized import list_members as _list_members
from tying.core.reparametrized import remove_refusal as _remove_refusal
from tying.core.reparametrized import removed_source as _removed_source
from tying.core.reparametrized import reparametrized_advice as _reparametrized_advice
from tying.core.root_advice import free_call as _free_call
from tying.core.root_advice import holder_path as _holder_path
from tying.core.root_advice import write_advice as _write_advice

# loading a state dict through tied slots (split out in stop 50; importable from here)
from tying.core.slot_loads import _check_before_load as _check_before_load
from tying.core.slot_loads import _check_before_load_into_part as _check_before_load_into_part
from tying.core.slot_loads import _contradictions as _contradictions
from tying.core.slot_loads import _expected_from as _expected_from
from tying.core.slot_loads import _has_hook as _has_hook
from tying.core.slot_loads import _load_from_state_dict as _load_from_state_dict
from tying.core.slot_loads import _own_storage_from as _own_storage_from
from tying.core.slot_loads import guard_loading as guard_loading
from tying.core.slot_names import add_module as _add_module
from tying.core.slot_names import check_name_free as _check_name_free
from tying.core.slot_names import register_buffer as _register_buffer
from tying.core.slot_names import slot_deleter as _slot_deleter
from tying.core.spectral_guard import TiedParams as _TiedParams
from tying.core.spectral_guard import norm_refusal as _norm_refusal

SLOTS_ATTR = "_tying_slots"
# readers whose reads of a slot are checked (Slot._watched_read)
_WATCHED_READERS = frozenset({"torch.nn.utils.prune", *_REMOVERS})
# A number that changes whenever a module's slots are installed or removed: code that
# specialises on the ties (a layer's fast path under torch.compile) reads it, so a
# compiled graph is guarded on it and re-traced after any re-tie.
SLOTS_GENERATION_ATTR = "_tying_slots_generation"
# Each process starts at a random point of a 2**62 range: a module unpickled from another
# process carries that process's number, and a re-tie here must not give it the same one
# (a compiled layer's record of its ties is keyed by it; stop 31).
_GENERATIONS = itertools.count(1 + secrets.randbits(62))
#: the generation last given to any module: a change means some tie was made or dropped
#: since (tying.core.unreached keeps a scan per optimizer while it stays the same)
LAST_GENERATION = [0]
# Set on a tied module by tying.train.grad_sample_module, whose hooks count the tied use in
# Opacus' per-sample gradients; a read through a tie that Opacus hooks without it is refused.
GRAD_SAMPLE_HOOKED_ATTR = "_tying_grad_sample_hooked"


@dataclasses.dataclass
class Slot:
    """A logical parameter served from ``getattr(source_module, source_name)``.

    ``storage`` lists the parameters this slot owns on its own module (the
    physical tensor of a self re-parametrisation, a relation's extras), by
    role: ``{"source": "weight_physical", "scale": "weight_scale"}``.
    """

    source_module: nn.Module
    source_name: str
    relation: Relation
    shape: tuple[int, ...]
    storage: dict[str, str] = dataclasses.field(default_factory=dict)
    # (target module path, source slot path) relative to the module the plan was
    # applied to; used to find the source's entry when a state dict is loaded.
    paths: tuple[str, str | None] = ("", None)
    # The (parent, child name, child) links from the module the plan was applied to down to
    # the source module when the tie was made: a tool that swaps the source module, or any
    # module above it, out (torch.ao's quantize_dynamic, an adapter, ``model.embed = ...``,
    # ``model.backbone = copy.deepcopy(model.backbone)``) leaves this slot reading a stale
    # copy, so a read checks every link still holds (one dict look-up each) and refuses
    # otherwise. (Before stop 30 only the source's parent was checked: replacing the
    # grandparent went unnoticed, and training updated one copy only.) A pickle of an
    # older version holds one (parent, child name) pair: see ``_links``.
    anchor: tuple | None = dataclasses.field(default=None, repr=False)
    # What a computed slot last handed out: (the tensor, its version counter and data
    # pointer then, what it was computed from). A computed value is a fresh tensor, so an
    # in-place write to it (nn.init.*, .fill_, .copy_, .data = ...) would be dropped
    # silently by the next read, which recomputes from the source: reads compare the
    # version and pointer (a few integer reads), verify/save also the values (see
    # check_writes). Holding the tensor keeps one logical-sized value alive until the next
    # read (its autograd graph's saved tensors are freed by backward as usual). Not a
    # dataclass field: it is per-process state, left out of pickles and deep copies.
    _handed = None
    # Earlier records like ``_handed`` whose tensor something else still held when a later
    # read replaced the record (a Python name, or a ``.data``/``.detach()`` alias of its
    # memory): ``m.b.weight.data.copy_(torch.randn(m.b.weight.shape))`` reads the slot
    # twice and writes into the first value after the second read, which used to drop
    # the only record of it (stop 35's open question). Kept only while held elsewhere, so
    # it keeps alive no tensor that would otherwise be freed before the next read; at most
    # ``KEPT_MAX`` (per-process state like ``_handed``).
    _kept = ()
    # The source shape the relation needs for ``shape`` (cached by ``source_shape``; a
    # per-process cache like ``_handed``, left out of pickles and deep copies).
    _need = None
    # Set when unpickled as part of a piece of the model without the tie's source: the
    # first read checks that the load holds the source (see part_pickles; per-process).
    _piece = None
    # The source tensor last read outside torch.func.functional_call, or a copy's own
    # (see func_calls.check_source_swap and own_seen; per-process).
    _seen = None

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_handed", "_kept", "_need", "_piece", "_seen"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._piece = _piece_without_source(self)
        self._seen = _own_seen(self, lambda held: held)  # None if its module isn't built yet
        _remember_anchor(self)  # its parts find the copy's declarations (declared_roots)

    def source_shape(self) -> tuple[int, ...] | None:
        """The shape the tie's source must have (None: the relation cannot say)."""
        need = self._need
        if need is None:
            try:
                need = tuple(self.relation.source_shape(tuple(self.shape)))
            except (NotImplementedError, ValueError):
                return None  # a relation defined elsewhere without a source_shape
            self._need = need
        return need

    def __deepcopy__(self, memo):
        # Copied with the module the plan was applied to: the source and every anchor link
        # come from the copy (memo). Copied as part of a piece of the model (stop 31):
        # rebased onto that piece, or refused when the source lies outside it (the copy
        # used to read a hidden private copy of the whole model: no parameters of its own,
        # nothing saved, never trained).
        state = self.__getstate__()
        state.update(_rebased_for_part(self, memo))
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in state.items()})
        new._seen = _own_seen(self, lambda held: memo.get(id(held)))  # the copy's own source
        _remember_anchor(new)  # its parts find the copy's declarations (declared_roots)
        return new

    def value(self, module: nn.Module) -> torch.Tensor:
        compiling = torch.compiler.is_compiling()
        # torch.jit.trace records the tensor ops of this read: the Python-side checks of
        # sizes and values would be TracerWarnings (an error under -W error) or refused as
        # constants of the trace (a computed slot's last value; stop 32), so they run
        # untraced, and nothing is recorded from inside the trace
        tracing = not compiling and torch._C._is_tracing()
        if not compiling:  # global_unstructured flattens the slot before it asks for a mask
            caller = sys._getframe(1).f_back  # who read the slot (frame 1: the property)
            reader = None if caller is None else caller.f_globals.get("__name__")
            # one dict look-up for every other reader (stop 61 added two: no extra compare)
            if reader in _WATCHED_READERS:
                self._watched_read(module, reader, caller)
        if (self._handed is not None or self._kept) and not compiling:
            # Let the old value go before computing the new one: a read never holds two
            # logical-sized copies at once (verify/save check values through _handed
            # first), unless another tensor still shares its memory (then keeping it
            # costs nothing until that lets go, and a write into it later is still caught)
            if tracing:
                with _untraced():
                    self.check_written(module)
                    self._kept = _still_held(self, self._handed)
            else:
                self.check_written(module)  # version, pointer and a probe of the values
                self._kept = _still_held(self, self._handed)
            self._handed = None
        if self._piece is not None and not compiling:
            _check_unpickled_piece(self, module, self._piece)
            self._piece = None
        if self.anchor is not None and not compiling:
            for depth, (parent, child, held) in enumerate(self._links()):
                now = parent._modules.get(child)
                if now is not held:
                    self._swapped(module, depth, now)
        try:
            src = getattr(self.source_module, self.source_name)
        except AttributeError:
            # deleted (del module.weight, ParameterDict.pop): raised inside the property,
            # an AttributeError made Python fall back to __getattr__, which said the
            # *target* module had no such attribute (stop 55)
            target, source = self.target_and_source(_name_in(module, self))
            removed = _removed_source(self, module)  # remove_weight_norm on the source
            raise TieError(
                f"{target} reads {source} through a tie ({self.relation!r}), but {removed}"
                if removed
                else f"{target} reads {source} through a tie ({self.relation!r}), but {source} is "
                f"gone from its module (deleted: del module.{self.source_name}, or "
                f"ParameterDict.pop); put a Parameter back there, or, to drop it, untie "
                f"first (tying.untie(model)) and delete it after"
            ) from None
        if (
            not compiling
            and isinstance(src, torch.Tensor)
            and src.is_meta
            and "_hf_hook" in self.source_module.__dict__
        ):
            # accelerate's offload hooks load a module's weights for its own forward only;
            # read through the tie from another module the source is still the meta
            # placeholder, and F.linear(cpu_input, meta_weight) returns uninitialised
            # memory without an error (logits 5e19 off, stop 31)
            raise TieError(
                f"{self.paths[0] or type(module).__name__} reads {self.paths[1] or self.source_name} "
                f"through a tie, but accelerate has offloaded it (a meta placeholder outside "
                f"its own module's forward), so the read would compute on no data; keep the "
                f"tie's source module on the execution device (leave it out of the offload / "
                f"device_map), or untie first (tying.untie(model)) to offload separate copies"
            )
        # Opacus' GradSampleModule hooks modules by their own parameters and never sees this use (issue 15).
        # (A tensor only: under torch.fx tracing src is a Proxy, which has every attribute,
        # and a traced tied model was refused in Opacus' name: stop 30 review.)
        if (
            not compiling
            and isinstance(src, torch.Tensor)
            and hasattr(src, "_forward_counter")
            and GRAD_SAMPLE_HOOKED_ATTR not in module.__dict__
        ):
            raise TieError(
                f"{self.paths[0] or type(module).__name__} reads {self.paths[1] or self.source_name} "
                f"through a tie that Opacus' GradSampleModule cannot see, so its per-sample "
                f"gradients would miss this use; wrap with tying.train.grad_sample_module(model) "
                f"or train with tying.train.DPSGD"
            )
        if not compiling and isinstance(src, torch.Tensor):
            _check_source_swap(self, module, src)  # functional_call(tie_weights=False)
        if type(src) is not nn.Parameter and self.source_name not in self.source_module._parameters:
            src = self._derived_source(module, src)
        if not compiling and isinstance(src, torch.Tensor):
            # a source resized under the tie, whatever the relation (stop 31, round 2: only
            # Same ties checked this; a resized Transposed/Scaled source served a value of
            # another shape, and a (1,)-shaped one broadcast silently)
            need = self.source_shape()
            if need is not None:
                if tracing:
                    with _untraced():
                        shape = tuple(src.shape)
                else:
                    shape = tuple(src.shape)
                if shape != need:
                    self._resized(module, src)
        if type(self.relation) is Same:
            out, extras = src, {}
        else:
            extras = {
                role: getattr(module, name)
                for role, name in self.storage.items()
                if role != "source"
            }
            out = self.relation(src, shape=self.shape, **extras)
            if (
                _swapping_on_conversion()  # first: a C flag read, usually False
                and not compiling
                and type(out) is torch.Tensor
                and isinstance(out._base, nn.Parameter)
            ):
                # A view of the source (Transposed), kept to catch a lost .data write, holds
                # the source's TensorImpl, and torch.utils.swap_tensors refuses a tensor held
                # elsewhere: with torch's swap-on-conversion, .to(dtype) after a forward
                # failed at the source ("Couldn't swap Linear.weight") with the modules
                # before it already converted (stop 38). Under that flag the slot hands out
                # a copy instead, checked as any computed value (an in-place write to it is
                # refused as lost, not silently dropped).
                out = out.clone()
        if not compiling and not tracing:
            if type(out) is not torch.Tensor or _is_functorch(out):
                # the Parameter itself (writes reach it), a tensor subclass (DTensor, ...),
                # or inside torch.func transforms (no storage to check)
                self._handed = None
            else:
                if out.is_inference():
                    # made under torch.inference_mode: no version counter, so any write
                    # to it, in place too, is caught by the probe alone
                    version, probed = None, True
                else:
                    # A view of the source (Transposed): in-place writes reach the
                    # source and are fine; only replacing its .data would be lost. The
                    # source is a Parameter, or under torch.func.functional_call the
                    # caller's plain tensor: a view of that is no temporary either, and
                    # the caller's own in-place edits of it between calls are not writes
                    # to the slot (stop 26: gradcheck through functional_call was refused).
                    base = out._base  # (nn.Parameter's isinstance is slow: only on views)
                    probed = not (
                        out is src  # Same under functional_call: the caller's tensor itself
                        or base is not None
                        and (isinstance(base, nn.Parameter) or _shares_storage(out, src))
                    )
                    version = out._version if probed else None
                try:
                    key = [(src, src._version, src.data_ptr())]
                    if extras:
                        key += [(t, t._version, t.data_ptr()) for t in extras.values()]
                except RuntimeError:  # stop 33: parameters made under torch.inference_mode
                    # have no version counter; every read of a tied layer built there
                    # failed with torch's "Inference tensors do not track version counter"
                    key = [(t, _version(t), t.data_ptr()) for t in (src, *extras.values())]
                # a fresh tensor: a write through .data bumps no counter, so keep a few of
                # its values to compare at the next read (a view writes through to the source)
                probe = (
                    (*_probe(out), (tuple(out.shape), out.stride()))
                    if probed and not out.is_meta
                    else None
                )
                self._handed = (out, version, out.data_ptr(), key, probe)
        return out

    def _links(self) -> tuple:
        """The anchor's (parent, child name, child) links, root first."""
        anchor = self.anchor
        if len(anchor) == 2 and isinstance(anchor[0], nn.Module):  # a pre-stop-30 pickle
            return ((anchor[0], anchor[1], self.source_module),)
        return anchor

    def _swapped(self, module: nn.Module, depth: int, now) -> None:
        """Refuse a read whose source sits under a module that was replaced.

        A wrapper that holds the very module under one of ``WRAPPER_SEGMENTS``
        (``apply_activation_checkpointing``'s ``checkpoint_wrapper``, FSDP1) replaced
        nothing: the source is still the one trained, so the read goes on (every read of a
        tie declared before such wrapping was refused as a stale copy, stop 36)."""
        links = self._links()
        held = links[depth][2]
        inner, seen = now, 0
        while isinstance(inner, nn.Module) and inner is not held and seen < 8:
            inner = next((inner._modules[s] for s in WRAPPER_SEGMENTS if s in inner._modules), None)
            seen += 1
        if inner is held and held is not None:
            return
        src_path = self.paths[1] or self.source_name
        names = src_path.split(".")[:-1]  # the source module's path, when the paths are known
        links = self._links()
        gone = ".".join(names[: len(names) - len(links) + depth + 1]) if names else "its module"
        moved = _moved_to(links[0][0], held, gone)
        if moved is not None:
            # nn.Sequential.insert/del, a re-ordered ModuleList: nothing was swapped out, the
            # modules shifted, and the old message blamed a quantizer (stop 38)
            target = self.paths[0] or type(module).__name__
            now_at = _moved_to(links[0][0], module, target)
            here = f" (now at {now_at!r})" if now_at is not None else ""
            raise TieError(
                f"{target}{here} reads {src_path}, but {gone!r}, which held it, moved to "
                f"{moved!r} (nn.Sequential.insert/del/pop or a re-ordered ModuleList shifted "
                f"the modules; {gone!r} is now a {type(now).__module__}.{type(now).__qualname__}), "
                f"so the tie declared by path names a module that no longer sits there; put "
                f"the modules back at their paths, or untie (tying.untie(model)) and apply a "
                f"plan written for the new paths; do not tying.retie(model), which would tie "
                f"whatever sits at the old paths now"
            )
        removed = _removed_source(self, module)  # remove_parametrizations on the source
        raise TieError(
            f"{self.paths[0] or type(module).__name__} reads {src_path}, but {removed}"
            if removed
            else f"{self.paths[0] or type(module).__name__} reads {src_path}, but {gone!r}, which "
            f"held it, was replaced in the model (by {type(now).__module__}."
            f"{type(now).__qualname__}: a quantizer, an adapter, a copy or an assignment "
            f"swapped it out), so the tie would read a stale copy that training no longer "
            f"updates; apply the tool through tying.interop (quantize_dynamic, "
            f"get_peft_model), or re-apply the plan to the new module"
        )

    def _resized(self, module: nn.Module, src) -> None:
        """Refuse a read of a ``Same`` tie whose source changed shape since the tie was
        made: the slot would serve a tensor of another shape than the one ``count``,
        ``load_state_dict`` and the module expect (transformers' plain
        ``resize_token_embeddings`` on a Plan-tied model resizes the source in place and
        then keeps the head's bias at the old size, so the model failed only at its next
        forward, or counted and loaded with the stale shape)."""
        target, source = self.target_and_source(_name_in(module, self))
        need = self.source_shape() or tuple(self.shape)
        via = "" if type(self.relation) is Same else f" (via {self.relation!r})"
        raise TieError(
            f"{target} is tied to {source}{via}, whose shape changed from {need} to "
            f"{tuple(src.shape)} after the tie was made (a resize such as transformers' "
            f"resize_token_embeddings, or a new tensor of another shape), so the tie no longer "
            f"fits (nothing is served at the new shape). Resize a Plan-tied model with "
            f"tying.hf.resize_token_embeddings(model, n). To undo a resize a tool already "
            f"made, resize {source} back to {need} (transformers: "
            f"model.resize_token_embeddings({need[0] if need else ''}) keeps the "
            f"original rows), or reload the model"
        )

    def _derived_source(self, module: nn.Module, src):
        """The source's value when its module no longer registers it as a parameter."""
        smod, name = self.source_module, self.source_name
        if name in slots_of(smod):
            return src  # a chain of ties: computed at this read
        if name + ORIG in pruned_names(smod):
            return source_value(smod, name)  # pruned: orig * mask now
        if compiling_or_functional(src):
            return src
        target = ".".join(p for p in (self.paths[0], _name_in(module, self)) if p)
        holders = sorted(n for n in smod._parameters if n.startswith(name)) or ["none"]
        raise TieError(
            f"{target} reads {self.paths[1] or name}, which is no longer a parameter of its "
            f"module (now a {type(src).__name__}; the module's parameters for it: "
            f"{', '.join(holders)}): torch.nn.utils.parametrize, spectral_norm or weight_norm "
            f"re-parametrised the tie's source after the tie was made, and the engine cannot "
            f"follow it (verify, count and save would not see it; a hook-set value is stale "
            f"until that module runs); " + self._reparametrized_advice(module, smod, name)
        )

    def _reparametrized_advice(self, module: nn.Module, smod: nn.Module, name: str) -> str:
        # the source's module path is relative to the plan's root; when that root sits in
        # another module (an nn.Sequential, a DDP-like .module), the user holds the outer
        # one, and model.get_submodule('a') was an AttributeError there (stop 61 review)
        owner = (self.paths[1] or "").rpartition(".")[0]
        held = _holder_path(module, self)
        if held is None:
            return _reparametrized_advice(smod, name, owner)
        prefix, outer, root = held
        return _reparametrized_advice(smod, name, ".".join(p for p in (prefix, owner) if p)) + (
            f" (model being the {type(outer).__name__} that holds the {type(root).__name__} "
            f"the plan was applied to at {prefix!r})"
        )

    def _watched_read(self, module: nn.Module, reader: str, caller) -> None:
        """A read by torch's prune, weight_norm, spectral_norm or parametrize code."""
        if reader == "torch.nn.utils.prune":
            _check_global_prune_read(module, self, caller)
            return
        if reader == "torch.nn.utils.weight_norm" and caller.f_code.co_name == "apply":
            # WeightNorm.apply only: its forward hook (compute_weight) reads the _g/_v
            # slots of a module tied whole to another weight-normed one (stop 61: every
            # forward of share("b", like="a") over two weight-normed layers was refused)
            self._refuse_weight_norm(module)
        refusal = _remove_refusal(reader, caller, self, None, module)  # name: if refused
        if refusal is not None:
            raise refusal

    def _refuse_weight_norm(self, module: nn.Module):
        # torch.nn.utils.weight_norm reads the slot, then deletes it from _parameters,
        # where it is not: a bare KeyError('weight') naming no tie (stop 56). A container
        # of another kind names the tie at that deletion itself (tying.nn layers' own
        # SlotParameters, whose message says what the layer's tie is): left to it
        if type(module.__dict__.get("_parameters")) not in (dict, _TiedParams):
            return
        name = _name_in(module, self)
        raise _norm_refusal("weight_norm", self, name, f"{name}_g, {name}_v", module)

    def target_and_source(self, name: str) -> tuple[str, str]:
        """The full paths of this slot (``name`` on its module) and of what it reads.

        The source is the tied-to path, or the slot's own storage parameter
        (``weight_physical``) when the tie has no other source.
        """
        mod_path, src_path = self.paths
        target = f"{mod_path}.{name}" if mod_path else name
        if src_path:
            return target, src_path
        own = self.storage.get("source", name)
        return target, f"{mod_path}.{own}" if mod_path else own

    def _data_replaced(self, held, version, ptr, key, probe) -> bool:
        """Whether the handed-out tensor's ``.data`` was replaced since it was handed out."""
        if version is None and probe is None:  # a view of the source (Transposed)
            # another shape is a replacement; another address may only be the source's
            # storage re-allocated in place (FSDP2), which _replaced_view tells apart
            return held.shape != self.shape or (
                held.data_ptr() != ptr and _replaced_view(self, held, key)
            )
        return held.data_ptr() != ptr or (
            probe is not None and (tuple(held.shape), held.stride()) != probe[2]
        )

    def check_written(self, module: nn.Module, *, values: bool = False) -> None:
        """Refuse when the tensor this computed slot last handed out was written to.

        The version counter catches in-place ops (``nn.init.normal_``, ``.fill_``,
        ``.copy_``, ``embedding_renorm_``). A write through ``.data`` (which has its
        own counter) is caught at the next read when it changed one of
        ``PROBE_SIZE`` evenly spaced values kept when the value was handed out (any
        whole-tensor write: ``.data.copy_``, ``.data.fill_``, an init through
        ``.data``); with ``values=True`` (``verify``, ``save``) every value is
        compared, by recomputing it, when the source has not changed since. Earlier
        values that another tensor still shared when the slot was read again
        (``_kept``: ``m.b.weight.data.copy_(torch.randn(m.b.weight.shape))``) are
        checked the same way.

        Raises:
            TieError: naming the slot, its source and the fix; the stale record is
                dropped, so the tie reads on unchanged afterwards.
        """
        if self._kept:
            for i, record in enumerate(self._kept):
                how = self._written(module, record, values)
                if how is not None:
                    self._kept = self._kept[:i] + self._kept[i + 1 :]
                    self._refuse(module, how)
        if self._handed is None:
            return
        how = self._written(module, self._handed, values)
        if how is not None:
            self._handed = None
            self._refuse(module, how)

    def _written(self, module: nn.Module, record: tuple, values: bool) -> str | None:
        """How the tensor of ``record`` was written since it was handed out (None: not)."""
        held, version, ptr, key, probe = record
        if version is not None and held._version != version:
            how = "in place"
        elif self._data_replaced(held, version, ptr, key, probe):
            how = "by replacing its .data"
        elif probe is not None and not _same_values(probe[1], _probe(held, probe[0])[1]):
            how = "through .data"
        elif values and not held.is_meta and _equal_now(self, module, held, key) is False:
            how = "through .data"
        else:
            return None
        return how

    def _refuse(self, module: nn.Module, how: str):
        target, source = self.target_and_source(_name_in(module, self))
        raise TieError(
            f"{target} was written {how} (by nn.init.*, .fill_, .copy_ or .data): it is computed "
            f"from {source} via {self.relation!r}, so the value handed out was a temporary "
            f"copy and the write was lost (the tie is unchanged; the next read recomputes "
            f"from {source}); write to {_write_advice(self, source)}, or untie first with "
            f"tying.untie(model) (or {_free_call(module, self, target)})"
        )


_is_functorch = torch._C._functorch.is_functorch_wrapped_tensor
_swapping_on_conversion = torch.__future__.get_swap_module_params_on_conversion


def _moved_to(root: nn.Module, held, old: str) -> str | None:
    """The path of ``held`` in ``root`` when it sits there at a path other than ``old``."""
    if not isinstance(held, nn.Module):
        return None
    path = next((p for p, m in root.named_modules() if m is held), None)
    return path if path is not None and path != old else None


class _untraced:
    """Suspend ``torch.jit.trace``'s recording (Python-side checks inside a traced read)."""

    def __enter__(self):
        self.state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)

    def __exit__(self, *exc):
        torch._C._set_tracing_state(self.state)


def compiling_or_functional(t) -> bool:
    return torch.compiler.is_compiling() or type(t) is not torch.Tensor or _is_functorch(t)


def _name_in(module: nn.Module, slot: Slot) -> str:
    return next((n for n, s in slots_of(module).items() if s is slot), slot.source_name)


def check_writes(model: nn.Module) -> None:
    """Refuse when a computed slot of ``model`` was written to since it was last read.

    Called by ``tying.verify`` and ``tying.save`` before they read any slot.

    Raises:
        TieError: naming every such slot (see :meth:`Slot.check_written`).

    Example:
        >>> import torch, tying
        >>> from tying.core.slots import check_writes
        >>> ae = torch.nn.ModuleDict({"enc": torch.nn.Linear(3, 2), "dec": torch.nn.Linear(2, 3)})
        >>> _ = tying.Plan([tying.share("dec.weight", like="enc.weight",
        ...                             relation=tying.Rotated())]).apply(ae)
        >>> _ = ae["dec"].weight.data.fill_(0.0)      # lost: the slot is computed
        >>> check_writes(ae)
        Traceback (most recent call last):
        ...
        tying.core.errors.TieError: dec.weight was written through .data ...
    """
    lost = []
    for mod in model.modules():
        for slot in slots_of(mod).values():
            try:
                slot.check_written(mod, values=True)
            except TieError as err:
                lost.append(str(err))
    if lost:
        raise TieError("; ".join(lost))


def _guarded_register_parameter(self, name, param):
    check_register(self, name, self.__dict__.get(SLOTS_ATTR, {}))
    _check_name_free(self, name, "register_parameter")
    # the base's method, not super(type(self), self): a class another tool put on top of the
    # tied one (parametrize's) inherits this method, and super() of it came back here forever
    type(self)._tying_base.register_parameter(self, name, param)


def _mask_property(name: str) -> property:
    # ``<slot>_mask`` is what torch's global_unstructured asks every module for before it
    # prunes the first: the refusal goes here (a property of that one name, so no other
    # attribute lookup pays for it). Asked from anywhere else it is missing, as before.
    def fget(self):
        check_prune_query(self, name + "_mask", self.__dict__.get(SLOTS_ATTR, {}))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name + '_mask'!r}")

    fget.__name__ = name + "_mask"
    return property(fget)


def _extra_repr(self):
    # Printed models show their ties; torch's own errors that print the module
    # (register_parametrization on a tied slot) then name the tie too.
    base = type(self)._tying_base.extra_repr(self)
    ties = [
        f"{name} <- {slot.paths[1] or 'its own storage'} via {slot.relation!r}"
        for name, slot in slots_of(self).items()
    ]
    return ", ".join([base, "tied: " + "; ".join(ties)] if base else ["tied: " + "; ".join(ties)])


def _own_repr(self):
    """The base class's own ``__repr__`` with the tied slots added (see :func:`tied_class`)."""
    ties = "; ".join(
        f"{name} <- {slot.paths[1] or 'its own storage'} via {slot.relation!r}"
        for name, slot in slots_of(self).items()
    )
    return f"{type(self)._tying_base.__repr__(self)} [tied: {ties}]"


def slots_of(module: nn.Module) -> dict[str, Slot]:
    """The tied slots of one module (name → Slot); empty when none."""
    return module.__dict__.get(SLOTS_ATTR, {})


def storage_names(module: nn.Module) -> set[str]:
    """Names of parameters on ``module`` that exist only to serve its tied slots."""
    return {name for slot in slots_of(module).values() for name in slot.storage.values()}


def base_class(module: nn.Module) -> type:
    """The module's class before any tie switched it."""
    return type(module).__dict__.get("_tying_base", type(module))


_CLASSES: dict[tuple[type, frozenset[str]], type] = {}


def tied_class(base: type, names) -> type:
    """The subclass of ``base`` that serves ``names`` as tied slots (one per (base, names))."""
    key = (base, frozenset(names))
    cls = _CLASSES.get(key)
    if cls is None:
        # "Tied" + the base's name, once: a tied tying.nn.TiedGateLSTM printed as
        # "TiedTiedGateLSTM(...)" (stop 54); its extra_repr still lists the tied slots
        title = base.__name__ if base.__name__.startswith("Tied") else f"Tied{base.__name__}"
        namespace: dict[str, Any] = {name: _slot_property(name) for name in sorted(key[1])}
        for name in key[1]:
            if not hasattr(base, name + "_mask"):
                namespace[name + "_mask"] = _mask_property(name)
        namespace.update(
            _tying_base=base,
            _tying_names=key[1],
            __reduce_ex__=_reduce_ex,
            __setstate__=_setstate,
            __setattr__=_guarded_setattr,
            register_parameter=_guarded_register_parameter,
            register_buffer=_register_buffer,
            add_module=_add_module,
            requires_grad_=_requires_grad_,
            zero_grad=_zero_grad,
            _apply=_apply,
            extra_repr=_extra_repr,
            _load_from_state_dict=_load_from_state_dict,
            _save_to_state_dict=_save_to_state_dict,
            __prepare_scriptable__=_prepare_scriptable,
            # The class lives here, not in the base's module (where no such name exists);
            # its name and docstring say what it wraps.
            __module__=__name__,
            __qualname__=title,
            __doc__=(
                f"{base.__module__}.{base.__qualname__} whose slot(s) "
                f"{', '.join(sorted(key[1]))} are served by tying (see tying.core.slots)."
            ),
        )
        if issubclass(base, nn.ParameterDict):
            namespace["__delitem__"] = _guarded_delitem
        namespace.update(_list_members(base))  # a ParametrizationList's is_tensor
        if base.__repr__ is not nn.Module.__repr__:
            # a class with its own __repr__ (transformers' Conv1D) prints no extra_repr:
            # torch's errors that print the module (prune.remove) named no tie (stop 54)
            namespace["__repr__"] = _own_repr
        cls = type(title, (base,), namespace)
        _CLASSES[key] = cls
    return cls


def _slot_property(name: str) -> property:
    def fget(self):
        try:
            slot = self.__dict__[SLOTS_ATTR][name]
        except KeyError:
            # a fresh instance of a tied class (type(layer)(4, 4), layer.__class__(...)): it
            # has no ties, so it serves its own parameter as its base class would (stop 36:
            # a bare KeyError('_tying_slots') at its first read, load or state_dict)
            return nn.Module.__getattr__(self, name)
        try:
            return slot.value(self)
        except RuntimeError as err:  # the failure's path only: a read pays nothing
            # torch's Expanded Weights (Opacus' grad_sample_mode="ew") swapped the source
            # for an ExpandedWeight, which failed as "cannot handle function __get__",
            # naming no tie (stop 55)
            explained = _expanded_weight_error(slot, self, name, err)
            if explained is None:
                raise
            raise explained from err

    fget.__name__ = name
    return property(fget, None, _slot_deleter(name), doc=f"Tied slot {name!r}, served by tying.")


def _guarded_delitem(self, key):
    slots = self.__dict__.get(SLOTS_ATTR)
    if slots and key in slots:
        # ParameterDict.__delitem__ (and pop) dropped the key from its list first, then
        # failed at the slot's property: the dict no longer listed a tie it still held
        # (stop 55). Refused before anything changes.
        target, source = slots[key].target_and_source(key)
        raise TieError(
            f"del / pop of {target}, a tied slot of {type(self).__name__} served from "
            f"{source} via {slots[key].relation!r}; untie it first "
            f"({_free_call(self, slots[key], target)}), then delete it; nothing "
            f"was changed"
        )
    type(self)._tying_base.__delitem__(self, key)


def _guarded_setattr(self, name, value):
    slots = self.__dict__.get(SLOTS_ATTR)
    if name == "qconfig" and slots:  # torch.ao's eager flows would leave it float (stop 56)
        _check_qconfig_set(self, value, type(self)._tying_base, slots)
    if slots and name in slots:
        slot = slots[name]
        swapping = _in_functional_swap()
        if type(slot.relation) is Same and not swapping and value is slot.value(self):
            # Assigning the very Parameter the slot already serves changes nothing:
            # Hugging Face's tie_weights()/init_weights() do exactly this.
            return
        target, source = slot.target_and_source(name)
        served = source if slot.paths[1] else f"its own storage {source}"
        if type(value).__module__.startswith("torchao."):
            # torchao's quantize_ walks the modules in order and swaps each weight: it
            # reaches a tied slot after quantizing every module before it, and has no
            # hook tying could refuse from earlier (stop 54)
            raise TieError(
                f"torchao's quantize_ reached {target}, a tied slot served from {served} "
                f"via {slot.relation!r}: every module it visited before {target} (in "
                f"named_modules order) is already quantized, so the model may now be PARTLY "
                f"QUANTIZED ({target} and the modules after it are float). Rebuild or reload "
                f"the float model and quantize it with "
                f"tying.interop.quantization.quantize_(model, config), which decides every "
                f"tie before any module changes"
            )
        if swapping:
            # functional_call({"embed.weight": w, "lm_head.weight": w}) passed this slot the
            # source's new value, so the no-op above let it in; torch's swap back then set
            # embed.weight to its old value first and lm_head.weight = w was refused, and
            # torch's own recovery swapped embed.weight back to w: the call raised and left
            # the caller's tensor in the model (stop 32). Refused here, on the way in, torch
            # restores what it swapped so far and the model is as it was.
            raise _slot_value_refusal(self, name, slot, served)
        raise TieError(
            f"{target} is a tied slot of {type(self).__name__}, served from {served} via "
            f"{slot.relation!r}; assigning another value would break the tie: change "
            f"{source} instead, or untie first with "
            f"tying.untie(model) (or {_free_call(self, slot, target)})"
        )
    type(self)._tying_base.__setattr__(self, name, value)


def _check_pending_writes(module: nn.Module, *, values: bool = False) -> None:
    """Refuse when a computed slot of ``module`` was written to since its last read."""
    for slot in module.__dict__.get(SLOTS_ATTR, {}).values():
        if slot._handed is not None or slot._kept:
            slot.check_written(module, values=values)


def _save_to_state_dict(self, destination, prefix, keep_vars):
    # A computed slot is not in the state dict (its source is): a write into it since its
    # last read would be lost from the checkpoint (model.apply(init); torch.save(
    # model.state_dict(), path)), so it is refused as the next read would (stop 32).
    _check_pending_writes(self)
    type(self)._tying_base._save_to_state_dict(self, destination, prefix, keep_vars)


def _apply(self, fn, *args, **kwargs):
    _check_part_conversion(self, fn, slots_of(self))  # a source outside the part (stop 60)
    # Under torch's swap-tensors conversion a recorded view of a source (Transposed) holds
    # that source, and torch.utils.swap_tensors refuses it ("Couldn't swap"): drop such
    # records before this module's sources are converted (the values are replaced anyway).
    if _swapping_on_conversion():
        for slot in slots_of(self).values():
            if slot._handed is not None and slot._handed[1] is None and slot._handed[4] is None:
                slot._handed = None
    out = type(self)._tying_base._apply(self, fn, *args, **kwargs)
    _forget_source_keys(slots_of(self).values())  # sources converted: not a write (stop 49)
    return out


def _prepare_scriptable(self):
    # torch.jit.script calls this on every module before compiling any: a tied slot is a
    # Python property that reads its source at each access, which TorchScript cannot
    # compile (it failed deep inside with "Don't support conversion in JoinedStr",
    # pointing at this file; stop 32)
    where = "; ".join(
        "{} <- {} via {!r}".format(*slot.target_and_source(name), slot.relation)
        for name, slot in slots_of(self).items()
    )
    raise TieError(
        f"torch.jit.script cannot compile {type(self).__name__} ({where}): a tied slot is "
        f"served by tying at each read, which TorchScript cannot express; use torch.compile "
        f"or torch.export (they keep the tie), torch.jit.trace, or script an untied copy "
        f"(c = copy.deepcopy(model); tying.untie(c); torch.jit.script(c); not for models "
        f"holding tying.nn layers, which TorchScript cannot compile tied or not: trace "
        f"those); the model is unchanged"
    )


def _rebuild(base: type, names: tuple[str, ...]):
    cls = tied_class(base, names)
    return cls.__new__(cls)


def _setstate(self, state):
    type(self)._tying_base.__setstate__(self, state)
    # a deep copy or unpickled tied module: an optimizer over it alone is checked as the
    # original's is (tying.core.unreached, stop 55)
    from tying.core import stale, unreached

    unreached.watch([self])
    if unreached.watching():
        stale.install_hook()


def _reduce_ex(self, protocol):
    # Lets deepcopy and pickle rebuild the dynamic class from importable parts.
    # A write into a computed slot not yet caught by a read is caught here: the copy (an
    # EMA / AveragedModel copy, torch.save(model)) recomputes the slot from its source and
    # would lose it without a word (stop 32).
    _check_pending_writes(self, values=True)
    cls = type(self)
    return (_rebuild, (cls._tying_base, tuple(sorted(cls._tying_names))), self.__getstate__())


def install(module: nn.Module, name: str, slot: Slot) -> None:
    """Serve ``module.<name>`` from ``slot`` (the physical parameter, if any, is dropped)."""
    module._parameters.pop(name, None)
    if type(module._parameters) is dict:  # names the tie to spectral_norm (stop 56)
        module.__dict__["_parameters"] = _TiedParams(module._parameters)
    slots = dict(slots_of(module))
    slots[name] = slot
    module.__dict__[SLOTS_ATTR] = slots
    module.__dict__[SLOTS_GENERATION_ATTR] = LAST_GENERATION[0] = next(_GENERATIONS)
    if slot._seen is None:  # the model's own source now: a first read needs no search
        slot._seen = _own_seen(slot, lambda held: held)
    _set_class(module, slots)


def uninstall(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    """Stop serving ``module.<name>``; register ``value`` (if given) as its own parameter."""
    slots = dict(slots_of(module))
    slot = slots.pop(name)
    module.__dict__[SLOTS_GENERATION_ATTR] = LAST_GENERATION[0] = next(_GENERATIONS)
    for storage in slot.storage.values():
        module._parameters.pop(storage, None)
    if slots:
        module.__dict__[SLOTS_ATTR] = slots
    else:
        module.__dict__.pop(SLOTS_ATTR, None)
        module.__dict__.pop(SLOTS_GENERATION_ATTR, None)  # back to the plain module
        if type(module._parameters) is _TiedParams:
            module.__dict__["_parameters"] = dict(module._parameters)
    _set_class(module, slots)
    if value is not None:
        module._parameters[name] = value


_PARAMETRIZE = "torch.nn.utils.parametrize"


def _set_class(module: nn.Module, slots: dict) -> None:
    """Make ``module`` the tied class serving ``slots`` (none: its plain class), keeping the
    classes torch.nn.utils.parametrize put on top of it.

    parametrize, like tying, swaps a module's class for a subclass (``ParametrizedLinear``,
    one per module, holding a property per parametrized name). Stop 33: a tie installed over
    such a class, or one removed from under it, left a class that no longer matched the
    module: after ``register_parametrization(lstm, "weight_hh_l0", ...)`` on a tied module,
    ``tying.untie`` returned and left every attribute access raising ``KeyError``, and
    ``remove_parametrizations`` recursed or half-ran (its tensor gone, or set to the
    parametrized value and still parametrized). So tying's class always sits directly on
    the plain class, and parametrize's classes are rebuilt, unchanged, on top of it.
    """
    layers, cls = [], type(module)
    while _is_parametrize_class(cls):
        layers.append(cls)
        cls = cls.__bases__[0]
    plain = cls.__dict__.get("_tying_base", cls)
    new = tied_class(plain, slots) if slots else plain
    for layer in reversed(layers):
        body = {k: v for k, v in layer.__dict__.items() if k not in ("__dict__", "__weakref__")}
        new = type(f"Parametrized{new.__name__}", (new,), body)
    module.__class__ = new


def _is_parametrize_class(cls: type) -> bool:
    """Whether ``cls`` is the per-module class ``register_parametrization`` made."""
    return (
        cls.__module__ == _PARAMETRIZE
        and cls.__name__.startswith("Parametrized")
        and "__getstate__" in cls.__dict__
        and len(cls.__bases__) == 1
    )
