"""torch's walks over a part of a tied model reach the tie's source, as on a hand tie (stop 57).

``model.dec`` is a plain ``nn.Sequential`` whose first layer reads ``enc.weight``. With a
hand tie (``dec[0].weight = enc.weight``, the anchor) ``dec.parameters()`` yields the
shared Parameter; with a Plan tie it did not, so ``dec.zero_grad()`` kept its gradient,
``dec.requires_grad_(False)`` left it training, ``clip_grad_norm_(dec.parameters())``
measured and clipped without it and ``parameters_to_vector`` left it out, all silently.
Every number here is compared with the same call on the hand-tied model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tying

X = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))


def _model(kind, relation=None):
    torch.manual_seed(0)
    m = nn.Module()
    m.enc = nn.Linear(4, 4)
    m.dec = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3))
    if kind == "hand":
        m.dec[0].weight = m.enc.weight
    else:
        kw = {} if relation is None else {"relation": relation}
        tying.Plan([tying.share("dec.0.weight", like="enc.weight", **kw)]).apply(m)
    return m


def _loss(m):
    return m.dec(m.enc(X)).pow(2).sum()


def _both():
    return _model("hand"), _model("plan")


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_of_a_plain_parent_clears_the_source_as_on_the_hand_tie(set_to_none):
    for m in _both():
        _loss(m).backward()
        m.dec.zero_grad(set_to_none=set_to_none)
        g = m.enc.weight.grad
        assert g is None if set_to_none else torch.count_nonzero(g) == 0
        assert torch.count_nonzero(m.enc.bias.grad) > 0  # not read by dec: kept


def test_zero_grad_of_a_plain_parent_clears_a_relation_source():
    m = _model("plan", tying.Transposed())
    _loss(m).backward()
    assert m.enc.weight.grad is not None
    m.dec.zero_grad()
    assert m.enc.weight.grad is None and m.enc.bias.grad is not None


def test_requires_grad_of_a_plain_parent_freezes_the_shared_weight_and_the_step_matches():
    hand, ours = _both()
    for m in (hand, ours):
        m.dec.requires_grad_(False)
        assert not m.enc.weight.requires_grad and m.enc.bias.requires_grad
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
        _loss(m).backward()
        opt.step()
    torch.testing.assert_close(ours.enc.weight, hand.enc.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.enc.bias, hand.enc.bias)
    assert tying.verify(ours) == 1
    ours.dec.requires_grad_(True)
    assert ours.enc.weight.requires_grad


def test_clip_grad_norm_of_a_part_measures_and_clips_the_shared_gradient():
    out = {}
    for kind, m in zip(("hand", "plan"), _both()):
        _loss(m).backward()
        total = torch.nn.utils.clip_grad_norm_(m.dec.parameters(), 0.1)
        out[kind] = (total, m.enc.weight.grad.clone(), m.dec[2].weight.grad.clone())
    for a, b in zip(out["hand"], out["plan"]):
        torch.testing.assert_close(b, a)
    assert out["plan"][1].norm() < 0.1  # clipped (it kept its 1.69 before)


def test_parameters_to_vector_of_a_part_round_trips_a_hand_tied_models_vector():
    hand, ours = _both()
    vec = torch.nn.utils.parameters_to_vector(hand.dec.parameters())
    assert torch.nn.utils.parameters_to_vector(ours.dec.parameters()).numel() == vec.numel()
    new = torch.arange(vec.numel(), dtype=vec.dtype)
    for m in (hand, ours):
        torch.nn.utils.vector_to_parameters(new, m.dec.parameters())
    want = hand.state_dict()
    for n, b in ours.state_dict().items():
        torch.testing.assert_close(b, want[n], rtol=0, atol=0, msg=n)
    assert ours.dec[0].weight is ours.enc.weight and tying.verify(ours) == 1


def test_an_optimizer_over_a_part_alone_is_refused_at_its_step_not_stepped_twice():
    # optimizers are no walker here (review): an optimizer per part on the hand tie holds
    # the shared weight twice and steps it twice; ours holds it once, in its owner's
    ours = _model("plan")
    opt = torch.optim.SGD(ours.dec.parameters(), lr=0.1)
    _loss(ours).backward()
    with pytest.raises(tying.TieError, match="would never train enc.weight"):
        opt.step()


def test_one_optimizer_per_part_steps_the_shared_weight_once():
    ours, whole = _model("plan"), _model("plan")
    opts = [torch.optim.SGD(p.parameters(), lr=0.1) for p in (ours.enc, ours.dec)]
    assert [len(o.param_groups[0]["params"]) for o in opts] == [2, 3]
    one = torch.optim.SGD(whole.parameters(), lr=0.1)
    for m, steppers in ((ours, opts), (whole, [one])):
        _loss(m).backward()
        for o in steppers:
            o.step()
    torch.testing.assert_close(ours.enc.weight, whole.enc.weight)
    assert tying.verify(ours) == 1


def test_walks_of_the_whole_model_and_plain_listings_are_unchanged():
    ours = _model("plan")
    names = [n for n, _ in ours.named_parameters()]
    assert names == ["enc.weight", "enc.bias", "dec.0.bias", "dec.2.weight", "dec.2.bias"]
    assert [n for n, _ in ours.dec.named_parameters()] == ["0.bias", "2.weight", "2.bias"]
    opt = torch.optim.SGD(ours.parameters(), lr=0.1)  # the root holds the source: once
    assert len(opt.param_groups[0]["params"]) == 5
    assert sorted(ours.state_dict()) == sorted(names)


def test_a_part_that_holds_the_source_lists_it_once_in_its_owners_place():
    torch.manual_seed(0)
    m = nn.Module()
    m.body = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tying.Plan([tying.share("body.0.weight", like="body.1.weight")]).apply(m)
    got = torch.nn.utils.parameters_to_vector(m.body.parameters())
    want = torch.cat([m.body[0].bias, m.body[1].weight.flatten(), m.body[1].bias])
    torch.testing.assert_close(got, want)


class _Wrapper(nn.Module):  # what torch.compile's OptimizedModule holds, without dynamo
    def __init__(self, inner):
        super().__init__()
        self._orig_mod = inner


def test_zero_grad_through_a_compile_wrapper_of_the_tied_module_clears_the_source():
    m = _model("plan")
    wrapped = _Wrapper(m.dec[0])
    m.dec(m.enc(X)).sum().backward()
    wrapped.zero_grad()
    assert m.enc.weight.grad is None and m.enc.bias.grad is not None


def test_fuse_conv_bn_eval_of_a_tied_conv_is_refused_naming_fusion_and_the_fix():
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    m = nn.ModuleDict({"a": nn.Conv2d(2, 2, 3), "b": nn.Conv2d(2, 2, 3), "bn": nn.BatchNorm2d(2)})
    m["l"], m["k"], m["bn1"] = nn.Linear(2, 2), nn.Linear(2, 2), nn.BatchNorm1d(2)
    tying.Plan(
        [tying.share("b.weight", like="a.weight"), tying.share("k.weight", like="l.weight")]
    ).apply(m.eval())
    with pytest.raises(
        tying.TieError,
        match=r"fusion\.fuse_conv_bn_eval deep-copies 'b' .* b\.weight reads a\.weight .* "
        r"Nothing was changed\. To fuse, untie .*tying\.free\('b\.weight'\)",
    ):
        fuse_conv_bn_eval(m["b"], m["bn"])
    with pytest.raises(tying.TieError, match=r"fusion\.fuse_linear_bn_eval deep-copies 'k'"):
        fuse_linear_bn_eval(m["k"], m["bn1"])
    assert tying.verify(m) == 2 and m["b"].weight is m["a"].weight


@pytest.mark.parametrize("inplace", [False, True])
def test_fuse_modules_of_a_tied_conv_is_refused_by_name_and_fuses_nothing(inplace):
    from torch.ao.quantization import fuse_modules

    m = nn.Module()
    m.a, m.seq = nn.Conv2d(2, 2, 3), nn.Sequential(nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2))
    tying.Plan([tying.share("seq.0.weight", like="a.weight")]).apply(m.eval())
    with pytest.raises(
        tying.TieError,
        match=r"fuse_modules: seq\.0\.weight is a tied slot \(TiedConv2d, a Conv2d whose "
        r"seq\.0\.weight reads a\.weight via Same\(\)\).* Nothing was fused.*tying\.free",
    ):
        fuse_modules(m, [["seq.0", "seq.1"]], inplace=inplace)
    assert isinstance(m.seq[1], nn.BatchNorm2d) and tying.verify(m) == 1
