"""Ghost clipping for linear layers whose weights are tied (claim D10).

DP-SGD needs every example's gradient norm. For a linear layer the per-example
gradient is a sum of outer products, so its norm can be had from two small Gram
matrices without ever building the gradient ("ghost clipping", Li et al. 2022;
Opacus' ``grad_sample_mode="ghost"``). Opacus refuses it when a weight is used
more than once (``NotImplementedError: Parameter tying is not supported with
Ghost Clipping``), because the norm of a *sum* of per-use gradients is not the
sum of their norms. This module does the tied case.

Derivation. Let a physical matrix ``W`` (shape ``(m, n)``) be read by uses
``u = 1..U`` in one forward pass (a Linear layer called twice, a decoder tied
with ``Transposed``, an embedding tied to the output layer). In every use the
gradient of example ``b`` is a sum over its positions ``t`` of outer products,
oriented like ``W``::

    G_u,b = Σ_t  L_u[b,t] ⊗ R_u[b,t]          L_u[b] : (T_u, m),  R_u[b] : (T_u, n)

- ``Same`` Linear use, ``y = x Wᵀ``: ``L = ∂ℓ/∂y`` (the output grad), ``R = x``;
- ``Transposed`` Linear use, ``y = x W``: the roles swap, ``L = x``, ``R = ∂ℓ/∂y``;
- Embedding use, ``y_t = W[i_t]``: ``L = onehot(i_t)`` (kept as indices), ``R = ∂ℓ/∂y``;
- a bias ``β`` read as ``y = … + β``: ``L = ∂ℓ/∂y``, ``R = 1`` (``n = 1``).

The example's gradient on ``W`` is the sum over uses, ``G_b = Σ_u G_u,b = L̄_bᵀ R̄_b``
with ``L̄_b``, ``R̄_b`` the uses' rows stacked (``Σ_u T_u`` rows). Hence::

    ‖G_b‖²_F = tr(R̄_bᵀ L̄_b L̄_bᵀ R̄_b) = ⟨L̄_b L̄_bᵀ, R̄_b R̄_bᵀ⟩_F
             = Σ_u Σ_v ⟨L_u[b] L_v[b]ᵀ, R_u[b] R_v[b]ᵀ⟩_F

The ``u = v`` terms are what per-layer ghost clipping sums; the ``u ≠ v`` terms
are the cross terms between uses. They can have either sign, so dropping them
(``cross_terms=False``) gives a norm that is neither an upper nor a lower bound,
and clipping to it is not DP. Each Gram matrix ``L_u L_vᵀ`` is ``(T_u, T_v)``;
for one-hot rows it is ``[i_t == i'_s]`` and against a dense row a gather. When
``B·(ΣT)²·(m+n)`` exceeds ``B·ΣT·m·n`` the per-example matrix ``L̄ᵀR̄`` is
cheaper and is built instead (as Opacus does per layer).

The clipped sum ``Σ_b c_b G_b`` (``c_b = min(1, C/‖g_b‖)``) is then
``Σ_u L_uᵀ diag(c) R_u``: one weighted matrix product per use, with no second
backward pass (the "book-keeping" trick of Bu et al. 2023).

Limits: inputs are batch-first; every trainable parameter must be read only by
``nn.Linear``/``nn.Embedding`` modules as their ``weight``/``bias`` (plain, or
tied with ``Same`` / ``Transposed``). A weight read by other code (``x @ lin.weight``,
``F.linear(h, emb.weight)`` for a tied output layer, a penalty in the loss) is
invisible to the hooks: every torch call of the forward and the loss is watched
(:class:`_ReadsOutsideUses`), and such a read is refused with an error naming the
parameter. Use :func:`tying.train.per_example_grads` (``mode="vmap"``) for anything else.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from tying.core.inventory import Inventory
from tying.core.relations import Same, Transposed
from tying.core.slots import base_class, slots_of
from tying.train import wide_norms
from tying.train._ghost_embedding import check_embedding
from tying.train._vetting import (
    METADATA_CALLS,
    BufferWrites,
    batch_rows,
    buffers_kept,
    callable_overrides,
    forward_key,
    func_name,
    gradless,
    params_behind,
    refuse_mixing_forward,
    refuse_parameter_hooks,
    run_forward,
    tensors_in,
    undo_overrides,
)
from tying.train._vetting import unchanged as _unchanged
from tying.train.backward_probe import custom_backward_nodes, refuse_mixing_backward
from tying.train.known_losses import KnownLosses
from tying.train.per_example_refusals import _refuse_inference_mode, losses_per_example
from tying.train.row_watch import RowLosses

_next_node_number = torch._C._autograd._get_sequence_nr  # this thread's next autograd node

# torch's own layers (exact types), whose forward reads no batch size and mixes no rows
_SIZE_BLIND = frozenset(
    {nn.Sequential, nn.Linear, nn.Embedding, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU,
     nn.Flatten, nn.Identity, nn.LayerNorm, nn.Dropout}
)  # fmt: skip


def reads_no_size(modules) -> bool:
    """Whether no module's forward can depend on the batch size: every module of a type
    in :data:`_SIZE_BLIND` and no forward hook, so that the probes at a batch size past
    those seen may be skipped (a 784-256-10 ``nn.Sequential``: 4 forwards, 4 ghost steps'
    time at B = 256)."""
    g = nn.modules.module
    if g._global_forward_hooks or g._global_forward_pre_hooks:
        return False
    return all(
        type(m) in _SIZE_BLIND and not m._forward_hooks and not m._forward_pre_hooks
        for m in modules
    )


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_SUPPORTED = (nn.Linear, nn.Embedding)
# Output gradients below max|g| * 2**-60 are set to 0 as they arrive in the backward pass
# (before the layer's own backward and the Gram/outer products).
# A softmax over a wide vocabulary (a tied LM head reads the N(0, 1) embedding, so its
# logits spread far) gives probabilities far below float32's normal range; their products
# are subnormal, and x86 multiplies subnormals ~90x slower (the tied-LM step was 0.28x of
# Opacus). Dropping them changes a norm by at most sqrt(n) * 2**-60 of its size (n the
# entries): far below float32 rounding. 0.0 turns it off (the reference in the tests).
FLUSH_BELOW = 2.0**-60
STRATEGIES = ("auto", "gram", "materialize")


@dataclasses.dataclass
class _Index:
    """One-hot rows kept as indices: ``idx`` (B, T) into a dimension of size ``size``."""

    idx: torch.Tensor
    size: int


@dataclasses.dataclass
class GhostResult:
    """What :meth:`GhostClipping.clip` returns.

    Attributes:
        grads: clipped, summed gradient per physical parameter name (no noise, not averaged).
        norms: per-example gradient norms before clipping, shape (B,).
        losses: per-example losses, shape (B,).
    """

    grads: dict[str, torch.Tensor]
    norms: torch.Tensor
    losses: torch.Tensor


def _physical_use(module: nn.Module, name: str, where: str) -> tuple[nn.Parameter, bool] | None:
    """The physical parameter behind ``module.<name>`` and whether it is read transposed."""
    p = module._parameters.get(name)
    if p is not None:
        return p, False
    slot = slots_of(module).get(name)
    if slot is None:
        return None  # e.g. bias=None
    rel = slot.relation
    if "source" in slot.storage or type(rel) not in (Same, Transposed):
        raise ValueError(
            f"ghost clipping: {where}.{name} is tied with {rel!r}; ghost clipping handles "
            f"Same and Transposed ties of Linear/Embedding weights; use mode='vmap' "
            f"(per-example gradients with torch.func) for this model"
        )
    inner = _physical_use(slot.source_module, slot.source_name, f"{where}<-source")
    if inner is None:
        return None
    param, flipped = inner
    return param, flipped ^ (type(rel) is Transposed)


class GhostClipping:
    """Per-example gradient norms and clipped sums for Linear/Embedding models, ties included.

    Args:
        model: a model whose trainable parameters are all ``weight``/``bias`` of
            ``nn.Linear`` or ``nn.Embedding`` modules, plain or tied (``Same``,
            ``Transposed``; several uses per forward are fine).
        strategy: ``"auto"`` (per tensor, the cheaper of the two below), ``"gram"``
            (norms from the Gram matrices) or ``"materialize"`` (build each example's
            gradient of that tensor, as Opacus' hook mode does).

    Raises:
        ValueError: an unknown ``strategy``; naming each trainable parameter ghost clipping cannot see (read by
            another kind of module, or tied through another relation), with the fix.

    Example:
        >>> import torch, tying
        >>> from tying.train import GhostClipping
        >>> ae = torch.nn.ModuleDict({"enc": torch.nn.Linear(6, 3), "dec": torch.nn.Linear(3, 6)})
        >>> _ = tying.Plan([tying.share("dec.weight", like="enc.weight",
        ...                             relation=tying.Transposed())]).apply(ae)
        >>> model = torch.nn.Sequential(ae.enc, torch.nn.Tanh(), ae.dec)
        >>> x = torch.randn(4, 6)
        >>> loss = lambda out, y: (out - y).pow(2).sum(-1)
        >>> GhostClipping(model).norms(loss, x, x).shape
        torch.Size([4])
    """

    def __init__(self, model: nn.Module, strategy: str = "auto"):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.model = model
        self.strategy = strategy
        # a loss known to be per-example by definition needs no mixing probe (stop 22)
        self._known = KnownLosses()
        # a user's own loss whose every call keeps rows apart needs none either (stop 23)
        self._row_losses = RowLosses()
        self.last_probed: bool | None = None
        # input signatures (and modules' training flags) whose forward was found to be
        # example by example (_vet_forward): vetted once each
        self._vetted: set = set()
        # (signature, batch size) pairs probed (stop 49, every size since stop 50): _vet_forward
        self._sized: set = set()
        self._key = None  # the last forward's input signature (_vet_forward)
        self._names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
        self._params = {id(p): p for _, p in model.named_parameters() if p.requires_grad}
        # (names, tensors) in named_parameters order, for a DP step: two walks fewer
        self._trainable = (tuple(self._names.values()), tuple(self._params.values()))
        self._uses: dict[nn.Module, dict[str, tuple[nn.Parameter, bool]]] = {}
        self._paths: dict[nn.Module, str] = {}
        self._owned: dict[nn.Module, frozenset[int]] = {}  # the parameter ids a module's uses read
        self._all_modules = list(model.modules())
        # buffers the forward writes from the batch are refused (stop 32, round 4)
        self._buffer_writes = BufferWrites(model)
        covered: set[int] = set()
        own_forward = []
        for mpath, mod in model.named_modules():
            if not isinstance(mod, _SUPPORTED):
                continue
            base = nn.Linear if isinstance(mod, nn.Linear) else nn.Embedding
            if type(mod).forward is not base.forward:  # a subclass computing something else
                own_forward.append(
                    f"{mpath or '<root>'} (a {base_class(mod).__name__} whose forward is not "
                    f"nn.{base.__name__}'s, so y = x Wᵀ + b is not known to hold)"
                )
                continue
            self._paths[mod] = mpath or "<root>"
            uses = {}
            for name in ("weight", "bias"):
                use = _physical_use(mod, name, mpath or "<root>")
                if use is not None and id(use[0]) in self._names:
                    uses[name] = use
                    covered.add(id(use[0]))
            if isinstance(mod, nn.Embedding):  # a frozen one's sparse/freq settings: fine
                check_embedding(mod, mpath, trainable="weight" in uses)
            self._uses[mod] = uses
            self._owned[mod] = frozenset(id(u[0]) for u in uses.values())
        bad = [
            f"{n} (not the weight/bias of an nn.Linear or nn.Embedding)"
            for i, n in self._names.items()
            if i not in covered
        ]
        bad += own_forward
        inv = Inventory(model)
        for path, info in inv.slots.items():
            if isinstance(info.module, _SUPPORTED) and info.name in ("weight", "bias"):
                continue
            root = inv.tensor(inv.root_of(path))
            if id(root) in covered:
                bad.append(
                    f"{self._names[id(root)]} (also read by {path}, a {base_class(info.module).__name__})"
                )
        if bad:
            raise ValueError(
                "ghost clipping cannot see every use of these trainable parameters: "
                + "; ".join(bad)
                + ". Use mode='vmap' (per-example gradients with torch.func), or freeze them "
                "(requires_grad=False)"
            )

    # -- the forward/backward tape ---------------------------------------------------

    def _refuse_unvetted(self) -> None:
        """Refuse, at every call, what would make a use compute other than ``x Wᵀ + b``.

        The norms are derived from each use's input and output gradient, assuming the
        module's own forward made its output. A forward hook (module or global) may
        return another output, and an instance attribute may replace ``forward``: both
        gave norms 1.0 off a per-example loop with no error (stop 18). Forward
        *pre*-hooks are fine (the recorded input is the one ``forward`` received), and
        so are hooks on the other modules (autograd carries their effect).
        """
        refuse_parameter_hooks(self._names.values(), self._params.values())
        if nn.modules.module._global_forward_hooks:
            raise ValueError(
                "ghost clipping: a global forward hook is registered "
                "(torch.nn.modules.module.register_module_forward_hook); it may change the "
                "output of the Linear/Embedding uses the norms are derived from; remove it "
                "(handle.remove()) or use mode='vmap'"
            )
        for mod in self._uses:
            what = [f"{n} set on the instance" for n in callable_overrides(mod)]
            if mod._forward_hooks:
                what.append("a forward hook")
            if what:
                # code that runs: del module.forward was advised for mod.compile() (stop 62)
                path = self._paths[mod]
                undo = undo_overrides(mod, "" if path == "<root>" else path)
                fixes = (["handle.remove() on its hook"] if mod._forward_hooks else []) + (
                    [undo] if undo else []
                )
                raise ValueError(
                    f"ghost clipping: {path} ({base_class(mod).__name__}) has "
                    f"{' and '.join(what)}, which may make its output other than x Wᵀ + b, "
                    f"the form the norms are derived from; remove it ({'; '.join(fixes)}) "
                    f"or use mode='vmap'"
                )

    def _watch(self, start: int) -> _ReadsOutsideUses:
        return _ReadsOutsideUses(self._names, self._owned, start)

    def _record(self, loss_fn: LossFn, x, y):
        _refuse_inference_mode("ghost clipping")
        # the uses are recorded by autograd: under a caller's torch.no_grad() no hook saw
        # one, and the norms and the clipped sum were 0 (a DP step applied noise alone),
        # with no error (stop 38); mode="vmap" (torch.func.grad) ignores an outer no_grad too
        with torch.enable_grad():
            return self._record_with_grad(loss_fn, x, y)

    def _record_with_grad(self, loss_fn: LossFn, x, y):
        self._refuse_unvetted()
        self._vet_forward(x)  # before the forward: a refusal leaves the model as it was
        xs = x if isinstance(x, tuple) else (x,)
        B = y.shape[0] if isinstance(y, torch.Tensor) and y.dim() else batch_rows(xs)
        written = self._buffer_writes.before(xs, B or 0, "ghost clipping")
        calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
        start = _next_node_number()  # a node numbered below this was made before the forward
        # torch's own module types run no code but their own: no forward read to watch
        watch = None if _plain_forward(self._all_modules) else self._watch(start)

        def enter(module, args):
            watch.inside.append(module)

        def hook(module, args, out):
            if watch is None:
                return record(module, args, out)
            watch.inside.pop()
            with torch._C.DisableTorchFunction():  # our own calls: not watched (~5 µs each)
                return record(module, args, out)

        def record(module, args, out):
            if not torch.is_grad_enabled() or not self._uses.get(module):
                return None
            # Adding a zero leaf gives us d(loss)/d(out) from autograd.grad without
            # computing any weight gradient, and stays right under later in-place ops.
            # One zero expanded to out's shape (stride 0), not zeros_like: the leaf's
            # gradient is still the full d(loss)/d(out), and no out-sized buffer is
            # filled (on the token model's (64, 32, 1000) logits that fill, with the page
            # faults of a fresh 8 MB buffer, was 0.8-2.6 ms a step).
            anchor = out.new_zeros(()).expand(out.shape).requires_grad_()
            calls.append((module, args[0].detach(), anchor))
            out = out + anchor
            # flushed where it arrives, so the layer's own backward (g @ W) is spared too
            out.register_hook(_flush_tiny)
            return out

        handles = [] if watch is None else [m.register_forward_pre_hook(enter) for m in self._uses]
        handles += [m.register_forward_hook(hook) for m in self._uses]
        try:
            if watch is None:
                out = self.model(*x) if isinstance(x, tuple) else self.model(x)
            else:
                with watch:  # no trainable read in the forward that the hooks cannot see
                    out = self.model(*x) if isinstance(x, tuple) else self.model(x)
        finally:
            for h in handles:
                h.remove()
        self._buffer_writes.after(written, "ghost clipping")
        # the loss: a known torch loss takes no trainable tensor (KnownLosses' rule), a
        # row-verified one reads none (RowWatch stops on one); any other is watched too
        losses = self._known(loss_fn, out, y)
        if losses is None:
            losses = self._row_losses(loss_fn, out, y)
        probe = losses is None
        if probe:
            with self._watch(start):
                losses = loss_fn(out, y)
        losses = losses_per_example(losses, y.shape[0])  # mode="vmap"'s rule too (stop 54)
        anchors = [c[2] for c in calls]
        custom = self._custom_backward(losses, xs, anchors, watch is not None, probe)
        grads = (
            torch.autograd.grad(losses.sum(), anchors, allow_unused=True, retain_graph=bool(custom))
            if anchors
            else []
        )
        if custom:
            where = [f"{self._paths.get(c[0], '<root>')} ({type(c[0]).__name__})" for c in calls]
            refuse_mixing_backward(losses, anchors, grads, custom, where, "ghost clipping")
        B = losses.shape[0]
        uses: dict[int, list[tuple[object, object]]] = {}
        for (module, inp, _), g in zip(calls, grads):
            if g is None:
                continue
            if g.dim() < 2 or g.shape[0] != B:
                raise ValueError(
                    f"ghost clipping: {self._paths.get(module, '<root>')} "
                    f"({type(module).__name__}) output has shape {tuple(g.shape)} but the batch "
                    f"has {B} examples; every input must be batch-first (B, ..., d) with the "
                    f"same B as y (pass a tensor shared by all examples as a buffer or "
                    f"parameter, not as an input)"
                )
            if B == 0:  # an empty Poisson batch: no use to record (stop 60: the reshape
                continue  # below failed, "cannot reshape tensor of 0 elements")
            g = _wide(g).reshape(B, -1, g.shape[-1])  # (B, T, d_out), flushed by the hook above
            if isinstance(module, nn.Embedding):
                idx = inp.reshape(B, -1)  # (B, T)
                if module.padding_idx is not None:
                    g = g * (idx != module.padding_idx).unsqueeze(-1).to(g.dtype)
                a: object = _Index(idx, module.num_embeddings)
            else:
                a = _wide(inp).reshape(B, -1, inp.shape[-1])  # (B, T, d_in)
            for name, (param, transposed) in self._uses[module].items():
                if name == "bias":
                    pair = (g, torch.ones_like(g[..., :1]))
                elif isinstance(module, nn.Embedding):  # y_t = W[i_t]: G = onehot(i)ᵀ g
                    pair = (g, a) if transposed else (a, g)
                else:  # y = x Wᵀ: G = gᵀ x
                    pair = (a, g) if transposed else (g, a)
                uses.setdefault(id(param), []).append(pair)
        self.last_probed = probe
        if probe:
            _refuse_losses_that_mix_examples(loss_fn, out, y, losses)
        return losses.detach(), uses

    def _custom_backward(self, losses, xs, anchors, watched: bool, probe: bool):
        """The custom ``autograd.Function`` nodes in the losses' graph, whose backward is
        then probed for mixing examples (:mod:`~tying.train.backward_probe`, stop 51: a
        backward dividing by the batch's gradient norm gave norms 0.19 off a per-example
        loop, no error). Torch's own modules and known losses have none. The graph is
        walked at every call: a walk cached per input signature and loss let a Function
        that the forward applies only on some steps (``if self.use: h = F.apply(h)``)
        through unprobed once a step without it had run (stop 52: norms 1.27 off a
        per-example loop, no error); the walk is ~0.02 ms on a small LM's graph."""
        if not (anchors and (watched or probe) and losses.shape[0] > 1):
            return []
        return custom_backward_nodes(losses, xs)

    def _vet_forward(self, x) -> None:
        """Refuse a forward that is not example by example (stop 30 review), once per input
        signature and set of training flags (again, without the pair probe, at each batch
        size not probed before), by forwards without gradients:

        - with one example more, every Linear/Embedding use's output must have one row
          more. A use whose first dimension only happened to equal the batch size (a
          positional ``Embedding(arange(T))`` with T == B, a Linear on a sequence-first
          view) was credited, row t, with every example's gradient at position t; with
          T != B it was refused, with T == B it was silent;
        - with example 0, then the last, given another example's input, under the same
          random state (so dropout draws the same masks), the outputs of the other
          examples must stay the same (:func:`~tying.train._vetting.refuse_mixing_forward`,
          shared with ``mode="vmap"``): a BatchNorm in training mode (or without running
          statistics), or a mean over the batch, mixes examples, and then no gradient is
          one example's own.
        """
        xs = x if isinstance(x, tuple) else (x,)
        B = batch_rows(xs)
        self._key = None
        if B is None:
            return
        key = self._key = forward_key(xs, self._all_modules)
        if key in self._vetted and ((key, B) in self._sized or self._reads_no_size()):
            return
        # a vetted signature at a batch size not probed before gets the probes again,
        # example 0 and the last moved only (4 forwards, not 2 log2 B + 5): a forward
        # that mixes only past some size (``if x.shape[0] > 6: h = h - h.mean(0)``)
        # passed the first step's probe at B = 4 and then ran at B = 8 with norms that
        # were no example's own, no error (stop 49). At every new size, not only a new
        # largest or smallest: one that mixes at one size inside the range probed (in-batch
        # pairs at ``x.shape[0] == 6``, probed at 3 and 9) gave norms 0.81 off a
        # per-example loop at B = 6, no error (stop 50). On a model of one's own class
        # (784-256-10, B ~ 256) a probe costs about 3 ghost steps' time, and a Poisson run
        # of 1,000 steps meets 87 sizes, each once. Models of torch's own layers skip them.
        groups = key not in self._vetted
        with buffers_kept(self.model):
            if self._vet_rows_grow(xs, B):
                done = refuse_mixing_forward(self.model, xs, B, "ghost clipping", groups=groups)
            else:  # an input that only looks batched: a swap would change it too
                done = True
        if done:
            self._vetted.add(key)
            self._sized.add((key, B))

    def _reads_no_size(self) -> bool:
        return reads_no_size(self._all_modules)

    def _vet_rows_grow(self, xs, B) -> bool:
        """The first probe of :meth:`_vet_forward`; False if it cannot be made."""
        more = tuple(
            torch.cat([t, t[:1]]) if isinstance(t, torch.Tensor) and t.dim() >= 1 else t for t in xs
        )
        dims: list[tuple[nn.Module, int | None]] = []

        def hook(mod, args, out):
            dims.append((mod, out.shape[0] if isinstance(out, torch.Tensor) and out.dim()
                         else None))  # fmt: skip

        handles = [m.register_forward_hook(hook) for m in self._uses]
        try:
            run_forward(self.model, more)
        except Exception:  # noqa: BLE001 - an input whose first dimension only equals B
            # (a (T, T) mask beside (B, T) tokens with T == B) cannot grow with the batch:
            # the probe cannot be made for this signature; the step itself is unchanged
            return False
        finally:
            for h in handles:
                h.remove()
        for mod, rows_out in dims:
            if rows_out != B + 1:
                raise ValueError(
                    f"ghost clipping: {self._paths.get(mod, type(mod).__name__)} "
                    f"({type(mod).__name__}) does not give one row per example: a probe "
                    f"with one example more than your batch of {B} ({B + 1}) gave it "
                    f"{rows_out} rows, so its input is not batch-first (positions from "
                    f"arange(T), or a sequence-first view) and its rows are not examples. "
                    f"Give it batch-first input (e.g. expand the positions to (B, T)), or use "
                    f"mode='vmap'"
                )
        return True

    # -- norms and clipped sums ------------------------------------------------------

    def norms(self, loss_fn: LossFn, x, y, *, cross_terms: bool = True) -> torch.Tensor:
        """Per-example gradient norms over all physical parameters, shape (B,).

        Args:
            loss_fn: ``(output, target) -> per-example losses (B,)``.
            x, y: a batch (batch-first).
            cross_terms: keep the terms between uses of a tied weight (True, the
                right norm). False reproduces per-layer ghost norms, which are wrong
                for tied weights; it exists to show that.

        Returns:
            A (B,) tensor.

        Raises:
            ValueError: an example whose loss is NaN or inf (its gradient may be finite,
                0 on that row, and would read as a norm of 0), naming the examples.
        """
        from tying.train.private_gradient import _check_finite_losses  # it imports this module

        losses, uses = self._record(loss_fn, x, y)
        with _autocast_off(losses.device):
            norms = _norms(
                uses, losses.shape[0], _wide_dtype(losses.dtype), cross_terms, self.strategy
            )
        # a NaN/inf loss whose gradient is finite (0 on that row) read as a norm of 0, and
        # was clipped into the sum, with no error (stop 50)
        _check_finite_losses(losses, norms)
        return norms

    def clip(self, loss_fn: LossFn, x, y, max_grad_norm: float) -> GhostResult:
        """Per-example norms, and ``Σ_b min(1, C/‖g_b‖) g_b`` per physical parameter.

        Args:
            loss_fn: ``(output, target) -> per-example losses (B,)``.
            x, y: a batch (batch-first).
            max_grad_norm: the clipping bound ``C`` (> 0).

        Returns:
            A :class:`GhostResult` (grads keyed by ``model.named_parameters()`` names;
            float32 for float16/bfloat16 parameters, so that the noise is added before
            any rounding to them).

        Raises:
            ValueError: ``max_grad_norm`` not a finite number > 0 (``inf`` clipped nothing,
                with no error); an example whose loss is NaN or inf (as :meth:`norms`).
            TypeError: ``max_grad_norm`` not one real number (``True`` was taken for 1).
        """
        from tying.train.private_gradient import _check_max_grad_norm  # it imports this module

        _check_max_grad_norm(max_grad_norm)  # private_grad's rule and message (stop 38)
        losses, uses = self._record(loss_fn, x, y)
        with _autocast_off(losses.device):
            return self._clipped(losses, uses, max_grad_norm)

    def _clipped(self, losses, uses, max_grad_norm: float) -> GhostResult:
        from tying.train.private_gradient import _check_finite_losses  # it imports this module

        B = losses.shape[0]
        norms = _norms(uses, B, _wide_dtype(losses.dtype), True, self.strategy)
        _check_finite_losses(losses, norms)  # as in norms() (stop 50)
        c = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # same rule as Opacus
        grads = {}
        for pid, name in self._names.items():
            p = self._params[pid]
            m, n = _matrix_shape(p)
            pairs = uses.get(pid, [])
            if len(pairs) == 1:  # one use (most tensors): its product is the sum, no zeros
                # (in the accumulator's dtype, as the += below would have cast it)
                total = _weighted_outer(*pairs[0], c, m, n).to(_wide_dtype(p.dtype))
            else:
                total = torch.zeros(m, n, dtype=_wide_dtype(p.dtype), device=p.device)
                for L, R in pairs:
                    total += _weighted_outer(L, R, c, m, n)
            grads[name] = total.reshape(p.shape)
        return GhostResult(grads, norms, losses)


# torch module types whose forward reads no parameter but through their own layers'
# code (a tied Linear/Embedding is a subclass with the same forward: base_class)
_PLAIN = frozenset(
    {
        nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Linear, nn.Embedding, nn.ReLU,
        nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Softmax, nn.LogSoftmax, nn.Flatten,
        nn.Identity, nn.Dropout,
    }
)  # fmt: skip


def _plain_forward(modules) -> bool:
    """Whether only torch's own forwards run (no hook, no instance override, no class of
    one's own): then no call outside the Linear/Embedding forwards reads a parameter."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return False
    for m in modules:
        base = base_class(m)
        if (
            base not in _PLAIN
            or type(m).forward is not base.forward
            or m._forward_pre_hooks
            or m._forward_hooks
            or callable_overrides(m)
        ):
            return False
    return True


class _ReadsOutsideUses(TorchFunctionMode):
    """Refuses a torch call that reads a trainable parameter outside the forward of an
    ``nn.Linear``/``nn.Embedding`` whose use of it the norms see.

    The norms are derived from those modules' inputs and output gradients only. A read
    anywhere else (``F.linear(h, emb.weight)`` for a tied output layer, ``x @ lin.weight``,
    a penalty on a weight in the loss) adds to that parameter's gradient a term the norms
    never see: stop 23 measured norms 0.60 off a per-example loop, with no error, on a
    tied output projection. ``inside`` is the stack of those modules whose forward is
    running (pushed and popped by the recording hooks); metadata reads are fine.
    """

    def __init__(self, names: dict[int, str], owned: dict[nn.Module, frozenset[int]], start: int):
        super().__init__()
        self.names = names
        self.owned = owned
        self.inside: list[nn.Module] = []
        # autograd nodes numbered below ``start`` were made before the forward: a tensor
        # made there from a parameter (a view kept on the model, ``w.t()`` in a closure)
        # is read like the parameter itself (found by the stop 23 review: 2.2 off)
        self.start = start
        self.clean: dict[int, object] = {}  # such nodes that reach no parameter, kept alive

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in METADATA_CALLS or gradless(func):
            return func(*args, **kwargs)  # no gradient: no share the norms miss (stop 60)
        mine = self.owned[self.inside[-1]] if self.inside else frozenset()
        for t in tensors_in(args, kwargs):
            if id(t) in self.names:
                if id(t) not in mine:
                    raise ValueError(
                        f"ghost clipping: trainable parameter {self.names[id(t)]} is read "
                        f"by {func_name(func)} outside the forward of the nn.Linear/"
                        f"nn.Embedding that owns it (e.g. F.linear(h, emb.weight) as a tied "
                        f"output layer, x @ lin.weight, or a penalty in the loss); the norms "
                        f"see only those modules' uses, so this use's share of every "
                        f"example's gradient would be missing. Make the use an nn.Linear "
                        f"(tied with tying.share(..., like=...)), or use mode='vmap'"
                    )
                continue
            g = t.grad_fn  # a tensor made before the forward from a parameter?
            if g is None or id(g) in self.clean or g._sequence_nr() >= self.start:
                continue
            bad = [i for i in params_behind(t, self.names) if i not in mine]
            if not bad:
                self.clean[id(g)] = g
                continue
            raise ValueError(
                f"ghost clipping: a tensor made before the forward from trainable "
                f"parameter(s) {', '.join(self.names[i] for i in bad)} (a view, slice or "
                f"product kept on the model or in a closure) is read by {func_name(func)}; "
                f"the norms see only the nn.Linear/nn.Embedding uses, so this use's share "
                f"of every example's gradient would be missing. Derive it inside forward "
                f"through a module, or use mode='vmap'"
            )
        return func(*args, **kwargs)


# float16/bfloat16 activations and output gradients are widened to float32 before the
# Gram matrices, norms and clipped sums: norms in bfloat16 were 0.66 % off and a clipped
# example could exceed the bound C (and a float32 loss failed with a dtype error, stop 18).
# The clipped sums stay float32; private_grad and DPSGD cast them after the noise.
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _wide_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _wide(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in _LOW_PRECISION else t


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast turned off on ``device``'s type and the CPU, where a caller turned it on.

    The clipping arithmetic (norms, Gram matrices, clipped sums) runs on gradients the
    forward and backward already made; under ``torch.autocast`` its matmuls ran in bfloat16
    too, so an example was clipped by a norm that was not the norm of what was summed: the
    clipped example reached 1.003 C (bfloat16), over the bound the accounting assumes,
    with no error (stop 34). Without autocast this is a no-op (about 1 µs).
    """
    kinds = {device.type, "cpu"}
    on = [k for k in kinds if torch.is_autocast_enabled(k)]
    if not on:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    for k in on:
        stack.enter_context(torch.autocast(k, enabled=False))
    return stack


def _flush_tiny(g: torch.Tensor) -> torch.Tensor:
    """``g`` with entries below ``max|g| * FLUSH_BELOW`` set to 0 (see FLUSH_BELOW)."""
    if FLUSH_BELOW == 0.0 or not g.dtype.is_floating_point or g.numel() == 0:
        return g
    # reduce in memory order: the gradient of logits that were transposed for the loss
    # is a permuted layout, where aminmax is ~7x slower than over a flat view
    dense = g
    if not g.is_contiguous():
        dense = g.permute(sorted(range(g.dim()), key=lambda i: -g.stride(i)))
        if not dense.is_contiguous():
            dense = g.contiguous()
    # max|g| in one reduction and one read-back (aminmax and two float() were three
    # syncs, ~10 µs of a tiny model's step, stop 23); exact, as abs and max are, and
    # NaN/inf come through as before
    top = float(torch.linalg.vector_norm(dense.view(-1), ord=float("inf")))
    if not top > 0 or top == float("inf"):
        return g  # all zero, or inf/nan: leave it for the norms to show
    # The flushed copy is written row-major, (B, ..., d), whatever layout g arrived in:
    # the layer's own backward (a (B*T, d) matrix product) and the clipped sum read it
    # as rows and copied a permuted one there themselves: two transposing copies of the
    # token model's (64, 32, 1000) gradient a step. The flush writes a copy anyway, so
    # choosing its layout is free: the token-model ghost step 1.07-1.08x faster at 1
    # thread, the tied LM 1.08x (stop 20, shared machine, spread in docs/train.md).
    return torch.hardshrink(
        g, top * FLUSH_BELOW, out=torch.empty(g.shape, dtype=g.dtype, device=g.device)
    )


def _refuse_losses_that_mix_examples(loss_fn: LossFn, out, y, losses: torch.Tensor) -> None:
    """Refuse a ``loss_fn`` whose loss for one example reads another example's output or target.

    Ghost clipping takes example ``i``'s gradient from ``d losses[i] / d out[i]``; a loss
    that mixes examples (typically by broadcasting: an output ``(B, 1)`` against a
    target ``(B,)`` gives a ``(B, B)`` loss whose row means read every target) spreads
    one example over every gradient, so the clipping bound no longer bounds it, with
    no error. The probe: example 0's output and target become another example's, the
    loss is computed again without gradients, and every other loss must stay the same.
    """
    B = losses.shape[0]
    if B < 2 or not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != B:
        return
    # both ends (stop 30 review): a loss in which example b reads example b + 1 (no wrap)
    # changes only when the last example does, and passed a probe of example 0 alone
    for i in (0, B - 1):
        _probe_one_end(loss_fn, out, y, losses, i)


def _probe_one_end(loss_fn: LossFn, out, y, losses: torch.Tensor, i: int) -> None:
    """Give example ``i`` another example's output and target; refuse if any other loss moves."""
    B = losses.shape[0]
    others = torch.arange(B, device=losses.device) != i
    with torch.no_grad():
        out0 = out.detach()
        # the example least like example i, so the probe changes as much as it can; kept
        # a tensor so that the probe costs one device sync (the verdict), not three
        # (the L1 distance in one reduction: abs() then sum() wrote an out-sized copy)
        diff = (out0 - out0[i : i + 1]).flatten(1)
        j = torch.linalg.vector_norm(diff, ord=1, dim=1).argmax()
        out2 = out0.clone()
        out2[i] = out0[j]
        y2 = y
        if isinstance(y, torch.Tensor) and y.dim() >= 1 and y.shape[0] == B:
            y2 = y.clone()
            y2[i] = y[j]
        again = loss_fn(out2, y2).detach()
        if again.dim() > 1 and again.shape[0] == B:  # rows summed per example, as the step's
            again = again.reshape(B, -1).sum(1)
        before = losses.detach()[others]
        after = again[others] if again.shape == losses.shape else None
        same = None if after is None else _unchanged(before, after)
    if after is None or not bool(same.all()):
        change = "its shape" if after is None else f"{float((after - before).abs().max()):.3g}"
        raise ValueError(
            f"ghost clipping: loss_fn mixes examples: giving example {i} the output and target "
            f"of example {int(j)} changed the losses of other examples (largest change {change}), "
            f"so no example's gradient is its own and clipping does not bound it. Common "
            f"cause: broadcasting, e.g. an output of shape {tuple(out.shape)} against a target "
            f"of another shape (output (B, 1) against target (B,) gives a (B, B) loss); give "
            f"the target the output's shape (y.view_as(out)), or compute the loss per example"
        )


def _matrix_shape(p: torch.Tensor) -> tuple[int, int]:
    return (p.shape[0], 1) if p.dim() == 1 else (p.shape[0], p.shape[1])


def _dim(a) -> int:
    return 1 if isinstance(a, _Index) else a.shape[-1]


def _gram(a, b, dtype) -> torch.Tensor:
    """``a[b] a'[b]ᵀ`` per example: (B, Ta, Tb); either side may be one-hot indices."""
    if isinstance(a, _Index) and isinstance(b, _Index):
        return (a.idx.unsqueeze(2) == b.idx.unsqueeze(1)).to(dtype)
    if isinstance(a, _Index):  # <onehot(i_t), b_s> = b[s, i_t]
        index = a.idx.unsqueeze(2).expand(-1, -1, b.shape[1])  # (B, Ta, Tb)
        return torch.gather(b.transpose(1, 2), 1, index)
    if isinstance(b, _Index):
        return _gram(b, a, dtype).transpose(1, 2)
    return torch.bmm(a, b.transpose(1, 2))


def _outer(L, R, B: int, m: int, n: int) -> torch.Tensor:
    """Per-example ``Lᵀ R``: (B, m, n)."""
    if isinstance(L, _Index):
        out = R.new_zeros(B, m, n)
        return out.scatter_add_(1, L.idx.unsqueeze(2).expand(-1, -1, n), R)
    if isinstance(R, _Index):
        out = L.new_zeros(B, n, m)
        return out.scatter_add_(1, R.idx.unsqueeze(2).expand(-1, -1, m), L).transpose(1, 2)
    return torch.bmm(L.transpose(1, 2), R)


def _weighted_outer(L, R, c: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """``Σ_b c_b L[b]ᵀ R[b]``: (m, n).

    ``c_b`` scales whichever dense side is smaller: the product is the same (up to the
    order of rounding), and on a vocabulary-sized output layer ``L`` is the (B, T, V)
    output gradient while ``R`` is the (B, T, d) input (the token model of issue 19:
    one pass over 2M floats less a step). :func:`_weighted_outer_reference` is the old
    form, kept as the tests' reference.
    """
    if not isinstance(L, _Index) and not isinstance(R, _Index) and R.numel() < L.numel():
        Rc = (R * c[:, None, None]).reshape(-1, n)
        return L.reshape(-1, m).t() @ Rc
    return _weighted_outer_reference(L, R, c, m, n)


def _weighted_outer_reference(L, R, c: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """``Σ_b c_b L[b]ᵀ R[b]`` with ``c`` always on the left (dense) side: (m, n)."""
    if isinstance(L, _Index):
        Rc = (R * c[:, None, None]).reshape(-1, n)
        return Rc.new_zeros(m, n).index_add_(0, L.idx.reshape(-1), Rc)
    if isinstance(R, _Index):
        Lc = (L * c[:, None, None]).reshape(-1, m)
        return Lc.new_zeros(n, m).index_add_(0, R.idx.reshape(-1), Lc).t()
    Lc = (L * c[:, None, None]).reshape(-1, m)
    return Lc.t() @ R.reshape(-1, n)


def _norms(uses, B: int, dtype, cross_terms: bool, strategy: str) -> torch.Tensor:
    sq = None  # on the activations' device (a CPU zeros here failed on CUDA, stop 31)
    for pairs in uses.values():
        for group in [pairs] if cross_terms else [[p] for p in pairs]:
            term = _sq_norm(group, B, dtype, strategy)
            sq = term if sq is None else sq + term
    if sq is None:
        return torch.zeros(B, dtype=dtype)
    # Gram products past the dtype's range (a finite gradient of entries ~1e20 in float32)
    # gave inf or NaN norms, refused as "not finite" (stop 51): taken again, scaled
    return wide_norms.finite_or_rescaled(
        sq.clamp_min(0).sqrt(), lambda: _scaled_norms(uses, B, cross_terms, strategy)
    )


def _scaled_norms(uses, B: int, cross_terms: bool, strategy: str) -> torch.Tensor:
    """:func:`_norms` in float64, each example's dense sides divided by their largest
    entry over the uses of a tensor (``‖Σ_u L_uᵀ R_u‖ = s_L s_R ‖Σ_u (L_u/s_L)ᵀ (R_u/s_R)‖``),
    so no Gram product overflows short of the norm itself."""
    per = []
    for pairs in uses.values():
        for group in [pairs] if cross_terms else [[p] for p in pairs]:
            scales = []
            for side in (0, 1):
                dense = [p[side].reshape(B, -1) for p in group if not isinstance(p[side], _Index)]
                scales.append(wide_norms.row_scales(dense) if dense else torch.ones(B).double())
            sL, sR = (s.to(_dense_device(group)) for s in scales)
            scaled = [(_over(L, sL), _over(R, sR)) for L, R in group]
            sq = _sq_norm(scaled, B, torch.float64, strategy).clamp_min(0)
            per.append(sq.sqrt() * sL * sR)
    return wide_norms.combine(per)


def _over(a, s: torch.Tensor):
    """A dense side divided by its per-example scale, in float64; indices as they are."""
    return a if isinstance(a, _Index) else a.double() / s[:, None, None]


def _dense_device(group) -> torch.device:
    a = group[0][0]
    return (a.idx if isinstance(a, _Index) else a).device


def _vnorm(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t, dim=(1, 2))


def _sq_norm(pairs, B: int, dtype, strategy: str) -> torch.Tensor:
    """``‖Σ_u L_uᵀ R_u‖²`` per example, by Gram matrices or by building it, whichever is cheaper."""
    if len(pairs) == 1 and strategy != "materialize":
        L, R = pairs[0]
        if not isinstance(L, _Index) and not isinstance(R, _Index) and L.shape[1] == 1:
            # one use with one row per example (no sequence dimension): its Gram matrices
            # are the scalars ‖L_b‖² and ‖R_b‖², so the norm is ‖L_b‖·‖R_b‖ (four ops
            # where two bmm, their transposes, a product, a sum, a zero fill and an add
            # were ten: ~20 µs of a tiny Linear's ghost step, stop 23; equal to the Gram
            # path to rounding, tested)
            return (_vnorm(L) * _vnorm(R)).square()
    m = max(p[0].size if isinstance(p[0], _Index) else p[0].shape[-1] for p in pairs)
    n = max(p[1].size if isinstance(p[1], _Index) else p[1].shape[-1] for p in pairs)
    T = sum((p[0].idx if isinstance(p[0], _Index) else p[0]).shape[1] for p in pairs)
    gram_cost = T * T * (_dim(pairs[0][0]) + _dim(pairs[0][1]))
    both_index = any(isinstance(L, _Index) and isinstance(R, _Index) for L, R in pairs)
    use_gram = gram_cost <= T * m * n if strategy == "auto" else strategy == "gram"
    if use_gram or both_index:
        first = pairs[0][0]
        sq = torch.zeros(
            B, dtype=dtype, device=(first.idx if isinstance(first, _Index) else first).device
        )
        for u, (Lu, Ru) in enumerate(pairs):
            for v in range(u, len(pairs)):
                Lv, Rv = pairs[v]
                term = (_gram(Lu, Lv, dtype) * _gram(Ru, Rv, dtype)).sum((1, 2))
                sq = sq + (term if u == v else 2 * term)
        return sq
    G = sum(_outer(L, R, B, m, n) for L, R in pairs)  # (B, m, n)
    return G.pow(2).sum((1, 2))


def ghost_norms(model: nn.Module, loss_fn: LossFn, x, y, *, cross_terms: bool = True):
    """Per-example gradient norms of ``model`` by ghost clipping, tied weights included.

    Args:
        model: see :class:`GhostClipping`.
        loss_fn: ``(output, target) -> per-example losses (B,)``.
        x, y: a batch (batch-first).
        cross_terms: False drops the terms between uses of a tied weight (wrong; for comparison).

    Returns:
        A (B,) tensor of norms.

    Raises:
        ValueError: see :class:`GhostClipping`.

    Example:
        >>> import torch, tying
        >>> from tying.train import ghost_norms
        >>> lin = torch.nn.Linear(3, 3)
        >>> model = torch.nn.Sequential(lin, torch.nn.Tanh(), lin)   # one weight, two uses
        >>> x = torch.randn(5, 3)
        >>> mse = lambda out, y: (out - y).pow(2).sum(-1)
        >>> bool((ghost_norms(model, mse, x, x) != ghost_norms(model, mse, x, x,
        ...                                                     cross_terms=False)).all())
        True
    """
    return GhostClipping(model).norms(loss_fn, x, y, cross_terms=cross_terms)
