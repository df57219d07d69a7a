"""Property test (stop 37): everyday PyTorch on Plan-tied models, against a hand-kept tie.

Random small stacks (an ``nn.Embedding`` feeding square ``nn.Linear`` layers) get random
ties from the whole vocabulary (``Same``, ``Transposed``, ``Rotated``, ``Flipped``,
``Scaled``, ``Mirrored``, ``Hashed``; weights and biases), then a random sequence of the
calls a user makes every day: copies (``deepcopy``, pickle, ``torch.save`` of the whole
model), dtype moves (``.double()``, ``.half()``, the swap-tensors path), ``.to("meta")`` +
``.to_empty()`` and a re-init, ``model.apply(init)`` and ``reset_parameters()`` of one
layer, a step after ``clip_grad_norm_``, ``vector_to_parameters``, ``load_state_dict``
(``strict=False``, ``assign=True``), ``tying.save``/``tying.load``, ``requires_grad_``, and
a tied layer moved to another key and back (``verify``/``retie`` name the move).

After each call the model either keeps every tie and computes what a hand-written
reference computes from the physical tensors alone (each relation written out again here
with plain torch ops: ``rot90``, ``flip``, a palindrome, the bucket map read off the
values), or the call is refused with a ``TieError`` that names the tie, and the ties
still hold. A third outcome (a wrong number, a tie that silently stopped holding, another
exception) fails the test.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import tempfile

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import tying

LAYERS = 3  # l0 (never tied: every tie has a source), l1, l2
OPS = (
    "deepcopy",
    "pickle",
    "torch_save",
    "double",
    "half",
    "swap_double",
    "meta",
    "apply_init",
    "reset_one",
    "clip_step",
    "vector",
    "load_strict_false",
    "load_assign",
    "tying_save_load",
    "requires_grad",
    "move",
)


def _build(n: int, seed: int) -> nn.ModuleDict:
    torch.manual_seed(seed)
    return nn.ModuleDict(
        {"emb": nn.Embedding(n, n), **{f"l{i}": nn.Linear(n, n) for i in range(LAYERS)}}
    )


def _forward(m: nn.ModuleDict, tokens: torch.Tensor) -> torch.Tensor:
    h = m["emb"](tokens)  # (B, n)
    for i in range(LAYERS):
        h = torch.tanh(m[f"l{i}"](h))
    return h


@st.composite
def tie_layouts(draw):
    """(n, ties): ties are (target, source or None, relation); sources are never targets."""
    n = draw(st.sampled_from([2, 3, 4]))
    ties = []
    for i in range(1, LAYERS):
        for name in ("weight", "bias"):
            if draw(st.integers(0, 2)) == 0:
                continue  # untied
            kinds = ["Same", "Flipped", "Scaled", "Mirrored", "Hashed"]
            if name == "weight":
                kinds += ["Transposed", "Rotated"]
            kind = draw(st.sampled_from(kinds))
            if kind == "Mirrored":
                rel = tying.Mirrored()
            elif kind == "Hashed":
                buckets = draw(st.integers(1, n if name == "bias" else n * n))
                rel = tying.Hashed(
                    buckets, seed=draw(st.integers(0, 5)), signed=draw(st.booleans())
                )
            elif kind == "Same":
                rel = tying.Same()
            elif kind == "Transposed":
                rel = tying.Transposed()
            elif kind == "Rotated":
                rel = tying.Rotated(draw(st.integers(-3, 3)))
            elif kind == "Flipped":
                rel = tying.Flipped(
                    (0,) if name == "bias" else draw(st.sampled_from([(0,), (1,), (0, 1)]))
                )
            else:
                rel = tying.Scaled(draw(st.sampled_from([0.5, -1.0, 2.0])))
            target = f"l{i}.{name}"
            if kind in ("Mirrored", "Hashed"):
                ties.append((target, None, rel))  # re-parametrises the slot itself
                continue
            sources = ["l0." + name] + (["emb.weight"] if name == "weight" else [])
            ties.append((target, draw(st.sampled_from(sources)), rel))
    ops = draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=4))
    return n, ties, ops


def _get(m: nn.Module, path: str):
    mod, name = path.rsplit(".", 1)
    return getattr(m.get_submodule(mod), name)


def _tie(m: nn.ModuleDict, ties) -> nn.ModuleDict:
    tying.Plan([tying.share(t, like=s, relation=r) for t, s, r in ties]).apply(m)
    with torch.no_grad():
        for t, _, r in ties:
            if type(r) is tying.Hashed:
                # distinct bucket values, so the map can be read off the slot's values
                phys = _get(m, t + "_physical")
                phys.copy_(0.125 * torch.arange(1, phys.numel() + 1, dtype=phys.dtype))
    return m


def _hash_maps(m: nn.ModuleDict, ties) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{slot: (bucket index, sign)} read off the values the tie serves right after it is made."""
    maps = {}
    for t, _, r in ties:
        if type(r) is tying.Hashed:
            v = _get(m, t).detach().reshape(-1)
            maps[t] = ((v.abs() / 0.125).round().long() - 1, torch.sign(v))
    return maps


def _expected(m: nn.ModuleDict, t: str, s: str | None, r, maps) -> torch.Tensor:
    """The slot's value computed from the physical tensors with plain torch ops."""
    if type(r) is tying.Mirrored:
        phys = _get(m, t + "_physical")
        n = _get(m, t.rsplit(".", 1)[0] + ".bias").shape[0]  # square layers: every dim is n
        return torch.cat([phys, phys[..., : n // 2].flip(-1)], dim=-1)
    if type(r) is tying.Hashed:
        idx, sign = maps[t]
        phys = _get(m, t + "_physical")
        shape = _get(m, t).shape
        return (phys.reshape(-1)[idx] * sign.to(phys.dtype)).reshape(shape)
    src = _get(m, s)
    if type(r) is tying.Same:
        return src
    if type(r) is tying.Transposed:
        return src.t()
    if type(r) is tying.Rotated:
        return torch.rot90(src, r.k, (-2, -1))
    if type(r) is tying.Flipped:
        return torch.flip(src, r.dims)
    return _get(m, t + "_scale") * src  # Scaled


def _check(m: nn.ModuleDict, ties, maps, tokens) -> None:
    """Every tie holds and the model computes what the hand-kept reference computes."""
    assert tying.verify(m) == len(ties)
    weights = {}
    for t, s, r in ties:
        got = _get(m, t)
        if type(r) is tying.Same:
            assert got is _get(m, s), t
        want = _expected(m, t, s, r, maps)
        assert got.dtype == want.dtype and torch.equal(got, want), (t, r)
        weights[t] = want
    unique = {id(p): p for p in m.parameters()}
    assert tying.count(m).physical == sum(p.numel() for p in unique.values())
    with torch.no_grad():
        h = F.embedding(tokens, _get(m, "emb.weight"))
        for i in range(LAYERS):
            w = weights.get(f"l{i}.weight", _get(m, f"l{i}.weight"))
            b = weights.get(f"l{i}.bias", _get(m, f"l{i}.bias"))
            h = torch.tanh(h @ w.t() + b)  # (B, n), the reference layer written out
        out = _forward(m, tokens)
    tol = 1e-2 if out.dtype == torch.float16 else 1e-5
    assert torch.allclose(out.float(), h.float(), atol=tol, rtol=tol)


def _computed(ties, path: str) -> bool:
    """A slot whose value is computed at each read (an in-place write to it is refused)."""
    return any(t == path and type(r) not in (tying.Same, tying.Transposed) for t, _, r in ties)


def _init(mod: nn.Module) -> None:
    if isinstance(mod, nn.Linear):  # what users write: every Linear's .weight and .bias
        nn.init.uniform_(mod.weight, -0.3, 0.3)
        nn.init.zeros_(mod.bias)


def _run(op: str, m: nn.ModuleDict, ties, n: int, tokens) -> nn.ModuleDict:
    """Apply ``op``; return the model to check next. A refusal must be a TieError by name."""
    if op == "deepcopy":
        return copy.deepcopy(m)
    if op == "pickle":
        return pickle.loads(pickle.dumps(m))
    if op == "torch_save":
        buf = io.BytesIO()
        torch.save(m, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=False)
    if op == "double":
        return m.double()
    if op == "half":
        return m.half().float()
    if op == "swap_double":
        # A fresh copy: after a forward a computed slot keeps the value it handed out (to
        # catch a lost write) and that value holds the source, which torch's swap refuses
        # in its own words ("Couldn't swap"), as for any tensor held elsewhere.
        c = copy.deepcopy(m)
        torch.__future__.set_swap_module_params_on_conversion(True)
        try:
            c.double()
            c.float()
        finally:
            torch.__future__.set_swap_module_params_on_conversion(False)
        return c
    if op == "meta":
        c = copy.deepcopy(m).to("meta")
        c.to_empty(device="cpu")
        g = torch.Generator().manual_seed(n)
        with torch.no_grad():
            for p in c.parameters():  # re-init the physical tensors, each once
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        return c
    if op in ("apply_init", "reset_one"):
        computed = [f"l{i}.{k}" for i in range(LAYERS) for k in ("weight", "bias")]
        if op == "apply_init":
            hit = [p for p in computed if _computed(ties, p)]
            call = lambda: m.apply(_init)  # noqa: E731
        else:
            layer = f"l{n % LAYERS}"
            hit = [p for p in computed if p.startswith(layer + ".") and _computed(ties, p)]
            call = m[layer].reset_parameters
        if not hit:
            call()
            return m
        # the writes into computed slots are lost: refused by name, by the call itself
        # (reset_parameters reads the weight it just wrote) or else by the next read
        with pytest.raises(tying.TieError, match=r"written in place.*write to \S+ instead") as err:
            call()
            _forward(m, tokens)
        refused = [str(err.value).split(" ", 1)[0]]
        while True:  # one refusal per lost write; each tie is unchanged and reads on
            try:
                _forward(m, tokens)
                break
            except tying.TieError as more:
                assert "written in place" in str(more)
                refused.append(str(more).split(" ", 1)[0])
                assert len(refused) <= len(hit), refused
        assert set(refused) <= set(hit), (refused, hit)
        return m
    if op == "clip_step":
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        opt.zero_grad(set_to_none=True)
        _forward(m, tokens).pow(2).sum().backward()
        unique = {id(p): p for p in m.parameters() if p.grad is not None}
        want = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for p in unique.values()])
        )
        got = nn.utils.clip_grad_norm_(m.parameters(), 0.5)
        assert torch.allclose(got, want), (got, want)  # each physical tensor counted once
        opt.step()
        m.zero_grad(set_to_none=False)
        assert all(p.grad is None or not p.grad.any() for p in m.parameters())
        return m
    if op == "vector":
        v = nn.utils.parameters_to_vector(m.parameters())
        new = torch.randn(v.shape, generator=torch.Generator().manual_seed(n), dtype=v.dtype)
        nn.utils.vector_to_parameters(new, m.parameters())
        assert torch.equal(nn.utils.parameters_to_vector(m.parameters()), new)
        return m
    if op in ("load_strict_false", "load_assign"):
        other = _tie(_build(n, 100 + n), ties).to(next(m.parameters()).dtype)
        sd = {k: v.clone() for k, v in other.state_dict().items()}
        result = m.load_state_dict(sd, strict=False, assign=op == "load_assign")
        assert not result.missing_keys and not result.unexpected_keys
        for k, v in other.state_dict().items():
            assert torch.equal(m.state_dict()[k], v), k
        return m
    if op == "tying_save_load":
        with tempfile.TemporaryDirectory() as d:
            path = tying.save(m, os.path.join(d, "m.safetensors"))
            fresh = _build(n, 7).to(next(m.parameters()).dtype)
            tying.load(fresh, path)
        assert {(t.target, t.source, repr(t.relation)) for t in tying.ties(fresh)} == {
            (t.target, t.source, repr(t.relation)) for t in tying.ties(m)
        }
        return fresh
    if op == "requires_grad":
        m.requires_grad_(False)
        assert not any(p.requires_grad for p in m.parameters())
        m.requires_grad_(True)
        return m
    if op == "move":
        # a tied layer moved to another key: the declaration (by path) no longer names it;
        # verify and retie say where the tie went and change nothing (stop 37), and moving
        # it back makes both whole again
        layer = f"l{1 + n % (LAYERS - 1)}"
        moved = [t for t, _, _ in ties if t.startswith(layer + ".")]
        m["moved"] = m.pop(layer)
        if moved:
            with pytest.raises(tying.TieError, match=rf"{layer}\.\w+: its tie now sits at moved\."):
                tying.verify(m)
            with pytest.raises(tying.TieError, match=rf"retie: {layer}\.\w+: its tie now sits"):
                tying.retie(m)
        m[layer] = m.pop("moved")
        assert not tying.retie(m).changed
        return m
    raise AssertionError(op)


@settings(
    max_examples=int(os.environ.get("TYING_HYPOTHESIS_EXAMPLES", "30")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(tie_layouts())
def test_everyday_calls_keep_every_tie_or_are_refused_by_name(case):
    n, ties, ops = case
    m = _tie(_build(n, n), ties)
    maps = _hash_maps(m, ties)
    tokens = torch.arange(n).repeat(2)  # (2n,)
    _check(m, ties, maps, tokens)
    for op in ops:
        m = _run(op, m, ties, n, tokens)
        _check(m, ties, maps, tokens)


def test_the_reference_sees_a_broken_tie():
    # the guard guards: a tie replaced by hand fails the reference check
    n, ties = 3, [("l1.weight", "l0.weight", tying.Rotated(1))]
    m = _tie(_build(n, 0), ties)
    maps = _hash_maps(m, ties)
    tokens = torch.arange(n)
    _check(m, ties, maps, tokens)
    with torch.no_grad():
        m["l0"].weight.mul_(2)
    _check(m, ties, maps, tokens)  # a write to the source is no break
    tying.untie(m)
    with torch.no_grad():
        m["l1"].weight.add_(1)
    with pytest.raises(AssertionError):
        _check(m, ties, maps, tokens)
