"""Ties survive everything that re-materialises parameters (DESIGN: 'Ties survive ...')."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

import tying

from .helpers import AE, Stack, sgd_step

T_PLAN = tying.Plan([tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())])
S_PLAN = tying.Plan(
    [tying.share("layers.*", like="layers.0"), tying.share("lm_head.weight", like="embed.weight")]
)


def _ae():
    torch.manual_seed(0)
    m = AE()
    T_PLAN.apply(m)
    return m


def test_to_dtype_keeps_ties():
    m = Stack()
    S_PLAN.apply(m)
    m.to(torch.float64)
    assert m.lm_head.weight is m.embed.weight and m.embed.weight.dtype == torch.float64
    tying.verify(m)


def test_to_empty_on_meta_then_reinit_keeps_ties():
    with torch.device("meta"):
        m = Stack()
    S_PLAN.apply(m)
    m.to_empty(device="cpu")
    for mod in m.modules():
        if hasattr(mod, "reset_parameters") and not tying.core.slots.slots_of(mod):
            mod.reset_parameters()
    assert m.lm_head.weight is m.embed.weight
    assert m.layers[2]["fc"].weight is m.layers[0]["fc"].weight
    assert m.embed.weight.device.type == "cpu" and torch.isfinite(m.embed.weight).all()
    tying.verify(m)
    assert len(list(m.parameters())) == len({id(p) for p in m.parameters()})


@pytest.mark.parametrize("assign", [False, True])
def test_state_dict_round_trip_including_assign(assign):
    src = Stack()
    S_PLAN.apply(src)
    dst = Stack()
    S_PLAN.apply(dst)
    dst.load_state_dict({k: v.clone() for k, v in src.state_dict().items()}, assign=assign)
    assert dst.lm_head.weight is dst.embed.weight
    assert dst.layers[1]["fc"].weight is dst.layers[0]["fc"].weight
    tying.verify(dst)
    x = torch.randint(0, 11, (2, 4))
    torch.testing.assert_close(dst(x), src(x))
    # parameters handed to an optimizer after an assign-load are the live ones
    sgd_step(dst, dst(x).pow(2).mean())
    assert dst.lm_head.weight is dst.embed.weight


def test_loading_an_untied_state_dict_with_consistent_duplicates_works():
    untied = AE()
    with torch.no_grad():
        untied.dec.weight.copy_(untied.enc.weight.t())
    tied = _ae()
    tied.load_state_dict(untied.state_dict())
    assert torch.equal(tied.enc.weight, untied.enc.weight)


def test_deepcopy_copies_the_tie_not_the_original():
    m = _ae()
    c = copy.deepcopy(m)
    with torch.no_grad():
        c.enc.weight.add_(1.0)
    assert torch.equal(c.dec.weight, c.enc.weight.t())
    assert not torch.equal(m.dec.weight, c.dec.weight)
    tying.verify(c)


def test_pickle_round_trip_keeps_ties():
    m = _ae()
    c = pickle.loads(pickle.dumps(m))
    assert type(c.dec).__name__ == "TiedLinear"
    assert torch.equal(c.dec.weight, c.enc.weight.t())
    tying.verify(c)


def test_torch_compile_same_outputs_and_gradients():
    m = _ae()
    x = torch.randn(4, 6)
    eager_out = m(x)
    eager_out.pow(2).sum().backward()
    eager_grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    compiled = torch.compile(m, backend="aot_eager")
    out = compiled(x)
    out.pow(2).sum().backward()
    torch.testing.assert_close(out, eager_out)
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, eager_grads[n])


def test_torch_export_of_a_transposed_tie():
    m = _ae()
    x = torch.randn(3, 6)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))
    # the exported program holds one weight tensor for the tie
    assert sum(1 for n in ep.state_dict if n.endswith("weight")) == 1


def test_functional_call_grad_and_vmap_see_the_physical_parameters():
    m = _ae()
    params = {n: p.detach() for n, p in m.named_parameters()}
    x = torch.randn(5, 6)

    def loss(p, xb):
        return functional_call(m, p, (xb,)).pow(2).sum()

    g = grad(loss)(params, x)
    assert sorted(g) == ["dec.bias", "enc.bias", "enc.weight"]
    m.zero_grad()
    loss(dict(m.named_parameters()), x).backward()
    torch.testing.assert_close(g["enc.weight"], m.enc.weight.grad)
    # per-example gradients: vmap over the batch, the tied weight's gradient summed over its uses
    per = vmap(grad(loss), in_dims=(None, 0))(params, x.unsqueeze(1))
    torch.testing.assert_close(per["enc.weight"].sum(0), m.enc.weight.grad)
    # swapping the physical tensor through functional_call changes every use
    swapped = dict(params, **{"enc.weight": torch.zeros(3, 6)})
    out = functional_call(m, swapped, (x,))
    torch.testing.assert_close(out, m.dec.bias.expand(5, 6))


def test_parameters_yield_each_physical_tensor_once_for_the_optimizer():
    m = Stack(n=4)
    S_PLAN.apply(m)
    params = list(m.parameters())
    assert len(params) == len({id(p) for p in params})
    assert sum(p.numel() for p in params) == tying.count(m).physical


def test_loading_a_state_dict_that_contradicts_a_tie_is_refused():
    untied = AE()  # dec.weight is NOT enc.weight.t()
    tied = _ae()
    with pytest.raises(RuntimeError, match=r"dec.weight is tied \(to enc.weight via Transposed"):
        tied.load_state_dict(untied.state_dict())


def test_assigning_the_parameter_a_slot_already_serves_is_a_no_op():
    # Hugging Face's tie_weights()/init_weights() do `lm_head.weight = embed.weight`
    m = Stack()
    S_PLAN.apply(m)
    snap = dict(m.lm_head.__dict__)
    m.lm_head.weight = m.embed.weight
    assert m.lm_head.weight is m.embed.weight and "weight" not in m.lm_head._parameters
    assert dict(m.lm_head.__dict__) == snap
    tying.verify(m)


def test_assigning_anything_else_to_a_tied_slot_names_the_full_path():
    m = nn.ModuleDict({"outer": Stack()})
    S_PLAN.apply(m["outer"])
    wrapper = nn.ModuleDict({"model": m})
    with pytest.raises(
        tying.TieError,
        match=r"^lm_head.weight is a tied slot of TiedLinear, served from embed.weight "
        r"via Same\(\); .*change embed.weight instead",
    ):
        wrapper["model"]["outer"].lm_head.weight = nn.Parameter(torch.zeros(11, 8))
    with pytest.raises(tying.TieError, match=r"^lm_head.weight is a tied slot"):
        m["outer"].lm_head.weight = nn.Parameter(m["outer"].embed.weight.detach().clone())
    assert m["outer"].lm_head.weight is m["outer"].embed.weight
    # a relation's view is a new tensor at every read: assigning it is not a no-op
    ae = _ae()
    with pytest.raises(tying.TieError, match=r"dec.weight .*served from enc.weight via Transposed"):
        ae.dec.weight = ae.dec.weight


def test_swapped_classes_report_a_module_that_exists_and_what_they_wrap():
    import importlib

    m = _ae()
    cls = type(m.dec)
    assert (cls.__module__, cls.__qualname__, cls.__name__) == (
        "tying.core.slots",
        "TiedLinear",
        "TiedLinear",
    )
    importlib.import_module(cls.__module__)
    assert "torch.nn.modules.linear.Linear" in cls.__doc__ and "weight" in cls.__doc__
    assert isinstance(m.dec, nn.Linear) and cls.__mro__[1] is nn.Linear
    assert type(copy.deepcopy(m).dec) is cls and type(pickle.loads(pickle.dumps(m)).dec) is cls


def test_a_tie_whose_source_module_was_swapped_out_is_refused_not_stale():
    """Issue 15: a tool that replaces the source module (torch.ao's quantize_dynamic, an
    adapter, plain assignment) must not leave the tied slot reading the old weight."""
    import copy
    import pickle
    import warnings

    def build():
        m = nn.ModuleDict({"embed": nn.Linear(4, 4), "head": nn.Linear(4, 4)})
        tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
        return m

    x = torch.randn(2, 4)
    m = build()
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):  # copies keep their tie
        clone["head"](x)
        assert clone["head"].weight is clone["embed"].weight
    m["embed"] = nn.Linear(4, 4)  # swapped out by assignment
    with pytest.raises(
        tying.TieError, match=r"head reads embed\.weight, but the module .* replaced"
    ):
        m["head"](x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        q = torch.ao.quantization.quantize_dynamic(build(), {nn.Linear})
    with pytest.raises(tying.TieError, match=r"replaced in the model \(by torch\.ao\."):
        q["head"](x)
