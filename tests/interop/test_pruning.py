"""torch.nn.utils.prune on tied weights: the one physical tensor is masked, every use sees it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

import tying
from tying.interop.pruning import prune


def _lm(seed: int = 0) -> nn.ModuleDict:
    torch.manual_seed(seed)
    m = nn.ModuleDict({"embed": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
    tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
    return m


def _forward(m, x):
    return F.linear(m["embed"](x), m["head"].weight)


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_pruning_the_tie_source_is_seen_by_every_use_and_verify_count_ties_work():
    m = _lm()
    torch_prune.l1_unstructured(m["embed"], "weight", amount=0.5)
    masked = m["embed"].weight_orig * m["embed"].weight_mask
    assert torch.equal(m["head"].weight, masked)
    assert int((m["head"].weight == 0).sum()) == 20
    assert tying.verify(m) == 1  # today: bare KeyError
    c = tying.count(m)
    assert (c.logical, c.physical) == (80, 40)
    assert [(t.target, t.source) for t in tying.ties(m)] == [("head.weight", "embed.weight")]


def test_a_tied_use_reads_the_pruned_source_fresh_not_the_stale_hook_attribute():
    m = _lm()
    torch_prune.l1_unstructured(m["embed"], "weight", amount=0.5)
    with torch.no_grad():
        m["embed"].weight_orig.mul_(3.0)  # an optimizer step; embed has not run since
    assert torch.equal(m["head"].weight, m["embed"].weight_orig * m["embed"].weight_mask)


def test_gradient_of_a_pruned_tied_tensor_sums_both_uses_through_the_mask():
    m, ref = _lm(), _lm()
    torch_prune.l1_unstructured(m["embed"], "weight", amount=0.5)
    x = torch.tensor([[1, 3, 5, 7]])
    _forward(m, x).pow(2).sum().backward()
    w = ref["embed"].weight.detach().clone().requires_grad_(True)
    mask = m["embed"].weight_mask
    wm = w * mask
    F.linear(F.embedding(x, wm), wm).pow(2).sum().backward()
    torch.testing.assert_close(m["embed"].weight_orig.grad, w.grad)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    opt.step()
    assert torch.equal(m["head"].weight, m["embed"].weight_orig * mask)
    tying.verify(m)


def test_prune_remove_on_the_source_keeps_the_tie_and_the_file_round_trips(tmp_path):
    m = _lm()
    torch_prune.l1_unstructured(m["embed"], "weight", amount=0.5)
    tying.save(m, tmp_path / "pruned.safetensors")  # while pruned
    again = _lm(seed=1)
    torch_prune.identity(again["embed"], "weight")
    tying.load(again, tmp_path / "pruned.safetensors")
    assert torch.equal(again["head"].weight, m["head"].weight)
    torch_prune.remove(m["embed"], "weight")
    assert m["head"].weight is m["embed"].weight
    assert tying.verify(m) == 1 and tying.count(m).physical == 40
    tying.save(m, tmp_path / "removed.safetensors")
    fresh = _lm(seed=2)
    tying.load(fresh, tmp_path / "removed.safetensors")
    assert fresh["head"].weight is fresh["embed"].weight
    assert torch.equal(fresh["head"].weight, m["head"].weight)


@pytest.mark.parametrize(
    "method", [torch_prune.l1_unstructured, torch_prune.random_unstructured, torch_prune.identity]
)
def test_pruning_a_tied_slot_directly_is_refused_and_leaves_the_model_unchanged(method):
    m = _lm()
    before, names = _state(m), [n for n, _ in m.named_parameters()]
    kwargs = {} if method is torch_prune.identity else {"amount": 0.5}
    with pytest.raises(
        tying.TieError,
        match=r"tied slot 'head\.weight' \(reads embed\.weight .*tying\.interop\.pruning\.prune\(model, 'head\.weight'",
    ):
        method(m["head"], "weight", **kwargs)
    assert [n for n, _ in m.named_parameters()] == names  # no weight_orig left behind
    assert not m["head"]._forward_pre_hooks and "weight_mask" not in m["head"]._buffers
    after = m.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    tying.verify(m)


def test_tying_prune_on_a_tied_slot_masks_the_physical_tensor_for_every_use():
    m = nn.ModuleList([nn.Linear(6, 6) for _ in range(3)])
    tying.Plan([tying.share("*", like="0")]).apply(m)
    assert prune(m, "2.weight", torch_prune.l1_unstructured, amount=0.5) == "0.weight"
    assert all(torch.equal(m[i].weight, m[0].weight_orig * m[0].weight_mask) for i in range(3))
    assert int((m[2].weight == 0).sum()) == 18
    assert tying.count(m).physical == 42


def test_tying_prune_refuses_a_relation_tie_and_an_unknown_path():
    m = nn.ModuleDict({"enc": nn.Linear(4, 6, bias=False), "dec": nn.Linear(6, 4, bias=False)})
    tying.Plan([tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]).apply(m)
    with pytest.raises(tying.TieError, match=r"'dec\.weight' reads enc\.weight via Transposed"):
        prune(m, "dec.weight", torch_prune.l1_unstructured, amount=0.5)
    with pytest.raises(
        tying.TieError, match=r"'dec\.wieght' is not a parameter.*closest: dec\.weight"
    ):
        prune(m, "dec.wieght", torch_prune.l1_unstructured, amount=0.5)
    assert not m["enc"]._forward_pre_hooks


def test_pruning_the_source_of_a_real_gpt2_keeps_the_lm_head_on_the_mask():
    M = pytest.importorskip("tests.interop.models")
    model = M.gpt2()
    M.GPT2_PLAN.apply(model)
    torch_prune.l1_unstructured(model.transformer.wte, "weight", amount=0.3)
    wte = model.transformer.wte
    assert torch.equal(model.lm_head.weight, wte.weight_orig * wte.weight_mask)
    tying.verify(model)
    c = tying.count(model)
    assert c.physical == sum(p.numel() for p in model.parameters())
    x = M.ids(97)
    with torch.no_grad():
        h = model.transformer(x).last_hidden_state
        torch.testing.assert_close(model(x).logits, h @ (wte.weight_orig * wte.weight_mask).T)


def _hand_tied():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    m[1].weight = m[0].weight  # one Parameter under two paths
    return m


@pytest.mark.parametrize("path", ["0.weight", "1.weight"])
def test_pruning_one_end_of_a_hand_tie_is_refused_with_plans_that_work(path):
    # torch's prune re-registered the Parameter as weight_orig on one module only: the
    # other read it unmasked, and verify still counted the tie as holding (stop 18)
    m = _hand_tied()
    with pytest.raises(
        tying.TieError, match=r"is one nn.Parameter with '[01].weight' \(a hand-made tie\)"
    ):
        prune(m, path, torch_prune.l1_unstructured, amount=0.5)
    assert not hasattr(m[0], "weight_orig") and not hasattr(m[1], "weight_orig")
    assert m[1].weight is m[0].weight  # unchanged
    # the fix the message gives: a declared tie, then every use sees the mask
    tying.Plan([tying.free("1.weight")]).apply(m)
    tying.Plan([tying.share("1.weight", like="0.weight")]).apply(m)
    assert prune(m, path, torch_prune.l1_unstructured, amount=0.5) == "0.weight"
    w = m[0].weight_orig * m[0].weight_mask
    x = torch.randn(3, 4)
    torch.testing.assert_close(m(x), F.linear(F.linear(x, w, m[0].bias), w, m[1].bias))
    assert tying.verify(m) == 1


# -- stop 26 review: against an untied reference with the same mask ---------------------


def _albert(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    tying.Plan([tying.share("2", like="0")]).apply(m)
    return m


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_a_pruned_whole_module_tie_equals_an_untied_model_masked_at_every_use(name):
    import copy

    m = _albert()
    ref = copy.deepcopy(m)
    tying.untie(ref)
    torch_prune.l1_unstructured(m[0], name, amount=0.5)
    mask = getattr(m[0], f"{name}_mask").clone()
    for i in (0, 2):  # the untied model needs the mask at both uses
        torch_prune.custom_from_mask(ref[i], name, mask)
    x = torch.randn(5, 8)
    assert torch.equal(m(x), ref(x))
    with torch.no_grad():  # an update of the one stored value reaches both uses, masked
        getattr(m[0], f"{name}_orig").add_(1.0)
        for i in (0, 2):
            getattr(ref[i], f"{name}_orig").add_(1.0)
    assert torch.equal(m[2](x), ref[2](x)) and torch.equal(m(x), ref(x))
    tying.verify(m)


def test_a_pruned_embedding_equals_an_untied_lm_whose_head_has_the_same_mask():
    import copy

    m = _lm()
    ref = copy.deepcopy(m)
    tying.untie(ref)
    torch_prune.random_unstructured(m["embed"], "weight", amount=0.5)
    mask = m["embed"].weight_mask.clone()
    torch_prune.custom_from_mask(ref["embed"], "weight", mask)
    torch_prune.custom_from_mask(ref["head"], "weight", mask)
    x = torch.arange(10)
    assert torch.equal(_forward(m, x), F.linear(ref["embed"](x), ref["head"].weight))


def test_a_tie_made_after_pruning_its_source_reads_the_masked_source():
    """Pruning first, then the plan: ``_holds_by_hand`` read ``_parameters['weight']`` of
    the pruned source and raised a bare KeyError (stop 30 review)."""
    m = torch.nn.ModuleDict({"embed": torch.nn.Embedding(10, 4), "head": torch.nn.Linear(4, 10)})
    torch_prune.l1_unstructured(m["embed"], "weight", amount=0.5)
    tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
    masked = m["embed"].weight_orig * m["embed"].weight_mask
    assert torch.equal(m["head"].weight, masked) and tying.verify(m) == 1
    x = torch.randn(2, 4)
    torch.testing.assert_close(m["head"](x), x @ masked.t() + m["head"].bias)


def test_tying_a_pruned_target_is_refused_and_leaves_the_model_unchanged():
    """The tie was made, ``weight_orig`` stayed behind as a dead parameter, and the next
    forward raised in the name of ``prune.global_unstructured`` (stop 30 review)."""
    m = torch.nn.ModuleDict({"embed": torch.nn.Embedding(10, 4), "head": torch.nn.Linear(4, 10)})
    torch_prune.l1_unstructured(m["head"], "weight", amount=0.5)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(tying.TieError, match=r"'head\.weight' is pruned .*prune\.remove"):
        tying.Plan([tying.share("head.weight", like="embed.weight")]).apply(m)
    assert type(m["head"]) is torch.nn.Linear
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
