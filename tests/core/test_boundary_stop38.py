"""Stop 38: core at the user boundary.

- ``.to(dtype)`` under torch's swap-tensors conversion after a forward of a model with a
  Transposed tie failed at the source ("Couldn't swap Linear.weight") with the modules
  before it already converted;
- ``copy.deepcopy(model[0:3])`` (a new Sequential holding tied modules and their source)
  was refused as a copy without the source;
- after ``nn.Sequential.insert(0, ...)`` the refusal blamed a quantizer or an adapter;
- ``requires_grad_(False)`` on one tied module left its tied weight training (its tensor
  belongs to the source's module) without a word.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying

from .helpers import sgd_step


def _stack(n: int = 4, ties=(("1", "0", "same"), ("2", "0", "t"))) -> nn.Sequential:
    torch.manual_seed(0)
    m = nn.Sequential(*(nn.Linear(4, 4) for _ in range(n)))
    rel = {"same": tying.Same(), "t": tying.Transposed()}
    tying.Plan(
        [tying.share(f"{t}.weight", like=f"{s}.weight", relation=rel[r]) for t, s, r in ties]
    ).apply(m)
    return m


def _plain_copy(m: nn.Module) -> nn.Module:
    """An untied plain-torch model with the values ``m`` reads (the reference)."""
    ref = nn.Sequential(*(nn.Linear(4, 4) for _ in range(len(m))))
    with torch.no_grad():
        for a, b in zip(ref, m, strict=True):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
    return ref


# -- swap-tensors conversion ----------------------------------------------------------------


@pytest.mark.parametrize(
    "ties", [(("2", "1", "t"),), (("0", "2", "t"),)], ids=["src-first", "src-last"]
)
def test_swap_tensors_to_dtype_after_a_forward_converts_every_module(ties):
    m = _stack(3, ties)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    ref = _plain_copy(m)
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        m(x).sum().backward()  # a computed slot used to hold the view it handed out
        m.to(torch.float64)  # was: RuntimeError "_apply(): Couldn't swap Linear.weight"
        ref.to(torch.float64)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(False)
    assert {p.dtype for p in m.parameters()} == {torch.float64}
    assert tying.verify(m) == 1
    t, s, _ = ties[0]
    assert torch.equal(m.get_parameter(f"{s}.weight").T, m[int(t)].weight)
    # the same float64 values; a transposed view may take another matmul path (last bits)
    torch.testing.assert_close(m(x.double()), ref(x.double()), rtol=0, atol=1e-12)
    sgd_step(m, m(x.double()).pow(2).sum())
    assert torch.equal(m.get_parameter(f"{s}.weight").T, m[int(t)].weight)


def test_under_swap_conversion_a_write_into_a_transposed_slot_is_still_caught():
    """The fix must not trade the loud failure for a silent lost write."""
    m = _stack(2, (("1", "0", "t"),))
    before = m[0].weight.detach().clone()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        m[1].weight.data = torch.zeros(4, 4)  # a temporary's .data: lost
        with pytest.raises(tying.TieError, match=r"1\.weight was written by replacing its \.data"):
            tying.verify(m)
        with torch.no_grad():
            m[1].weight.fill_(0.0)  # in place into the copy handed out: lost too
        with pytest.raises(tying.TieError, match=r"1\.weight was written in place"):
            _ = m[1].weight
    finally:
        torch.__future__.set_swap_module_params_on_conversion(False)
    assert torch.equal(m[0].weight, before) and torch.equal(m[1].weight, before.T)
    assert tying.verify(m) == 1


# -- a copy of a slice --------------------------------------------------------------------


def test_deepcopy_of_a_slice_holding_the_source_keeps_the_ties():
    m = _stack()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    c = copy.deepcopy(m[0:3])  # was: TieError "would copy 1.weight without its tie's source"
    assert torch.equal(c(x), m[0:3](x))
    assert tying.verify(c) == 2
    assert c[1].weight is c[0].weight and c[0].weight is not m[0].weight
    assert list(c.state_dict()) == ["0.weight", "0.bias", "1.bias", "2.bias"]
    before = m[0].weight.detach().clone()
    sgd_step(c, c(x).pow(2).sum())
    assert c[1].weight is c[0].weight and torch.equal(c[2].weight, c[0].weight.T)
    assert torch.equal(m[0].weight, before)  # the original is not trained by the copy
    # another order: the copy's own paths
    d = copy.deepcopy(nn.Sequential(m[2], m[0]))
    assert tying.verify(d) == 1 and d[0].weight._base is d[1].weight
    # a piece without the source is still refused
    with pytest.raises(tying.TieError, match=r"would copy 1\.weight without its tie's source"):
        copy.deepcopy(m[1:3])


def _needs_outside(ties, lo: int, hi: int) -> bool:
    return any(lo <= int(t) < hi and not lo <= int(s) < hi for t, s, _ in ties)


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    ties=st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 3), st.sampled_from(["same", "t"])),
        min_size=1,
        max_size=3,
        unique_by=lambda t: t[0],
    ).map(lambda ts: tuple((str(t), str(min(s, t - 1)), r) for t, s, r in ts)),
    lo=st.integers(0, 4),
    span=st.integers(1, 5),
)
def test_a_copy_of_any_slice_holds_its_ties_or_names_the_missing_source(ties, lo, span):
    """The kind of defect: a copy of a piece of a tied model. Against brute force: a copy
    of ``m[lo:hi]`` is refused exactly when a tied module in it reads a source outside it;
    otherwise it computes what the slice computes and holds every tie inside it."""
    sources = {s for _, s, _ in ties}
    if any(t in sources for t, _, _ in ties):  # chains are another stop's business
        return
    m = _stack(5, ties)
    hi = min(lo + span, 5)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(lo))
    if _needs_outside(ties, lo, hi):
        with pytest.raises(tying.TieError, match="without its tie's source"):
            copy.deepcopy(m[lo:hi])
        return
    c = copy.deepcopy(m[lo:hi])
    inside = sum(lo <= int(t) < hi for t, _, _ in ties)
    assert tying.verify(c) == inside
    assert torch.equal(c(x), m[lo:hi](x))
    ref = _plain_copy(c)
    sgd_step(c, c(x).pow(2).sum())
    for t, s, r in ties:
        if lo <= int(t) < hi:
            w_s = c[int(s) - lo].weight
            assert torch.equal(c[int(t) - lo].weight, w_s if r == "same" else w_s.T)
    assert not torch.equal(c(x), ref(x))  # trained, the ties holding


# -- modules shifted under a tie ------------------------------------------------------------


def test_a_source_shifted_by_sequential_insert_is_named_as_moved():
    m = _stack(2, (("1", "0", "same"),))
    m.insert(0, nn.ReLU())
    with pytest.raises(
        tying.TieError,
        match=r"1 \(now at '2'\) reads 0\.weight, but '0', which held it, moved to '1' "
        r"\(nn\.Sequential\.insert/del/pop.*'0' is now a torch\.nn\.modules\.activation\.ReLU"
        r"\).*put the modules back at their paths, or untie",
    ):
        m(torch.randn(2, 4))
    del m[0]  # back at their paths: reads on
    assert tying.verify(m) == 1 and m[1].weight is m[0].weight


def test_a_source_really_swapped_out_still_names_the_swap():
    m = _stack(2, (("1", "0", "same"),))
    m[0] = nn.Linear(4, 4)
    with pytest.raises(tying.TieError, match=r"'0', which held it, was replaced in the model"):
        m(torch.randn(2, 4))


# -- requires_grad_ on one tied module ------------------------------------------------------


def _flags(m: nn.Module) -> list[bool]:
    return [p.requires_grad for p in m.parameters()]


def test_freezing_one_tied_module_is_refused_naming_the_tie_and_changes_nothing():
    m = _stack(3)
    before = _flags(m)
    with pytest.raises(
        tying.TieError,
        match=r"requires_grad_\(False\) on TiedLinear cannot freeze its tied slot\(s\) 1\.weight "
        r"\(served from 0\.weight via Same\(\)\).*get_parameter\('0\.weight'\)"
        r"\.requires_grad_\(False\).*tying\.free\('1\.weight'\).*nothing was changed",
    ):
        m[1].requires_grad_(False)  # was: 1.bias frozen, 1.weight still trained
    assert _flags(m) == before  # 1.bias too
    # freezing the source freezes every use (one tensor), the documented way
    m[0].requires_grad_(False)
    assert not m[1].weight.requires_grad and not m[2].weight.requires_grad
    m[1].requires_grad_(False)  # now consistent: allowed
    with pytest.raises(tying.TieError, match=r"cannot unfreeze its tied slot\(s\) 2\.weight"):
        m[2].requires_grad_(True)
    m.requires_grad_(True)  # the whole model: every tensor, each once
    assert all(_flags(m)) and m[2].weight.requires_grad


def test_a_freed_slot_freezes_alone():
    m = _stack(3)
    tying.Plan([tying.free("1.weight")]).apply(m)
    m[1].requires_grad_(False)
    assert not m[1].weight.requires_grad and m[0].weight.requires_grad
    assert m[2].weight.requires_grad


@settings(derandomize=True, deadline=None, max_examples=30)
@given(ops=st.lists(st.tuples(st.sampled_from([None, 0, 1, 2, 3]), st.booleans()), max_size=6))
def test_requires_grad_on_any_module_gives_every_tensor_it_reads_the_flag_or_changes_nothing(ops):
    """Against brute force: after a requires_grad_(flag) that returns, every logical tensor
    the module reads (its slots included) has that flag; one that raises changed nothing."""
    m = _stack(4, (("1", "0", "same"), ("2", "0", "t"), ("3", "2", "same")))
    for where, flag in ops:
        mod = m if where is None else m[where]
        before = _flags(m)
        try:
            mod.requires_grad_(flag)
        except tying.TieError:
            assert _flags(m) == before
            continue
        with torch.enable_grad():
            for sub in mod.modules():
                for name in ("weight", "bias"):
                    if hasattr(sub, name):
                        assert getattr(sub, name).requires_grad == flag, (where, flag, name)


# -- a source module registered at two paths ------------------------------------------------


class _Shared(nn.Module):
    """T5's layout: one embedding registered as ``shared`` and as both stacks' embeddings."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Embedding(10, 4)
        self.encoder = nn.ModuleDict({"embed_tokens": self.shared})
        self.decoder = nn.ModuleDict({"embed_tokens": self.shared})
        self.lm_head = nn.Linear(4, 10, bias=False)

    def forward(self, ids):  # (B,) -> (B, 10)
        return self.lm_head(self.decoder["embed_tokens"](ids))


@pytest.mark.parametrize("like", ["shared", "encoder.embed_tokens", "decoder.embed_tokens"])
def test_verify_accepts_a_source_named_by_any_of_its_modules_paths(like):
    torch.manual_seed(0)
    m = _Shared()
    tying.Plan([tying.share("lm_head.weight", like=f"{like}.weight")]).apply(m)
    # was: "lm_head.weight: reads shared.weight, declared decoder.embed_tokens.weight"
    assert tying.verify(m) >= 1
    assert m.lm_head.weight is m.shared.weight
    ids = torch.tensor([1, 2, 3])
    sgd_step(m, m(ids).pow(2).sum())
    assert tying.verify(m) >= 1 and m.lm_head.weight is m.decoder["embed_tokens"].weight
    m.lm_head = nn.Linear(4, 10, bias=False)  # a real break is still named
    with pytest.raises(tying.TieError, match=r"lm_head\.weight: is an independent parameter"):
        tying.verify(m)
