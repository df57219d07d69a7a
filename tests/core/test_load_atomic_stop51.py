"""``load_state_dict`` into a module *above* a tie (a container holding a ``tying.nn`` layer
that ties itself, a model whose part a plan was applied to) is all or nothing.

Before stop 51 only the module a plan was applied to, and the modules under it, checked
the ties before copying: a load into an ``nn.Sequential`` holding a ``TiedAutoencoder``
copied every module before the tie, then refused, and said "nothing was loaded". Every
tensor is compared before and after; a state dict that agrees with the tie loads as into
the same model tied by hand (``b.weight = a.weight``).
"""

import pytest
import torch
from torch import nn

import tying
import tying.nn as tn


def _values(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _assert_unchanged(m, before):
    after = _values(m)
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k


def _noise(m):
    return {k: torch.randn_like(v) for k, v in m.state_dict().items()}


def _autoencoder_in_sequential():
    m = nn.Sequential(nn.Linear(4, 4), tn.TiedAutoencoder(4, 2), nn.Linear(4, 3))
    sd = _noise(m)
    sd["1.decoder.weight"] = torch.randn(4, 2)  # not the encoder's transpose
    return m, sd, "1.decoder.weight"


def _symmetric_in_list():
    m = nn.ModuleList([nn.Linear(2, 2), tn.SymmetricConv1d(1, 1, 5)])
    sd = _noise(m)
    del sd["1.weight_physical"]
    sd["1.weight"] = torch.arange(5.0).view(1, 1, 5)  # a plain Conv1d's kernel, no palindrome
    return m, sd, "1.weight"


def _plan_on_a_part():
    m = nn.Sequential(nn.Linear(4, 4), nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)}))
    tying.Plan([tying.share("b", like="a")]).apply(m[1])  # the model holds the part already
    sd = _noise(m)
    sd["1.b.weight"] = torch.randn(3, 3)  # the tie's two entries disagree
    return m, sd, "1.b.weight"


def _put_in_place_later():
    top = nn.Module()
    top.x = nn.Linear(2, 2)
    top.block = nn.Module()
    top.block.pre = nn.Linear(2, 2)
    top.block.ae = tn.TiedAutoencoder(4, 2)  # into a module that already had a parent
    sd = _noise(top)
    sd["block.ae.decoder.weight"] = torch.randn(4, 2)
    return top, sd, "block.ae.decoder.weight"


CASES = {
    "autoencoder_in_sequential": _autoencoder_in_sequential,
    "symmetric_in_list": _symmetric_in_list,
    "plan_on_a_part": _plan_on_a_part,
    "put_in_place_later": _put_in_place_later,
}


@pytest.mark.parametrize("assign", [False, True], ids=["copy", "assign"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_refused_load_into_a_module_above_a_tie_changes_nothing(case, assign):
    torch.manual_seed(0)
    m, sd, key = CASES[case]()
    before = _values(m)
    params = [id(p) for p in m.parameters()]
    with pytest.raises(RuntimeError, match=rf"\(nothing was loaded\):\n\t{key} is tied"):
        m.load_state_dict(sd, assign=assign)
    _assert_unchanged(m, before)
    assert [id(p) for p in m.parameters()] == params
    assert tying.verify(m) >= 1


def test_a_state_dict_that_agrees_loads_as_into_the_model_tied_by_hand():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 3), nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)}))
    tying.Plan([tying.share("b", like="a")]).apply(m[1])
    hand = nn.Sequential(
        nn.Linear(3, 3), nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)})
    )
    hand[1].b.weight, hand[1].b.bias = hand[1].a.weight, hand[1].a.bias  # the anchor
    sd = _noise(hand)
    sd["1.b.weight"], sd["1.b.bias"] = sd["1.a.weight"], sd["1.a.bias"]
    hand.load_state_dict(sd)
    m.load_state_dict(sd)
    x = torch.randn(2, 3)
    for mod in (m, hand):  # one forward through each tied use
        assert torch.equal(mod[1].b(mod[1].a(mod[0](x))), hand[1].b(hand[1].a(hand[0](x))))
    assert m[1].b.weight is m[1].a.weight and torch.equal(m[1].a.weight, sd["1.a.weight"])


def test_a_link_made_past_torch_says_what_was_loaded_and_is_checked_next_time():
    """``_modules[name] = m`` is not told to torch's registration hook: the first refused
    load is found by the tie itself, after the modules before it were copied; the error
    says so, and the next load is all or nothing."""
    torch.manual_seed(0)
    inner = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)})
    tying.Plan([tying.share("b", like="a")]).apply(inner)
    outer = nn.Module()
    outer.x = nn.Linear(2, 2)
    outer._modules["y"] = inner
    sd = _noise(outer)
    sd["y.b.weight"] = torch.randn(3, 3)
    with pytest.raises(RuntimeError, match=r"modules loaded before 'y' now hold the state"):
        outer.load_state_dict(sd)
    assert torch.equal(outer.x.weight, sd["x.weight"])  # what the message says
    before = _values(outer)
    with pytest.raises(RuntimeError, match=r"\(nothing was loaded\):\n\ty\.b\.weight is tied"):
        outer.load_state_dict(_noise(outer) | {"y.b.weight": torch.randn(3, 3)})
    _assert_unchanged(outer, before)


class _Layout(nn.Linear):
    """A layer that refuses a state dict saved with another layout, as the ``tying.nn``
    layers do, through the core's hook for a check before anything is copied."""

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        meta = getattr(destination, "_metadata", None)
        if meta is not None:
            meta.setdefault(prefix[:-1], {})["layout"] = self.out_features

    def _tying_check_load(self, state_dict, prefix, local_metadata):
        saved = local_metadata.get("layout")
        if saved is not None and saved != self.out_features:
            raise ValueError(f"{prefix}: saved with layout {saved}, this one {self.out_features}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        self._tying_check_load(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


@pytest.mark.parametrize("tied", [False, True], ids=["no_tie", "beside_a_tie"])
def test_a_layer_s_own_check_runs_before_anything_is_copied(tied):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), _Layout(3, 3))
    if tied:
        tying.Plan([tying.share("1.weight", like="0.weight")]).apply(m)
    sd = m.state_dict()
    sd = type(sd)({k: torch.randn_like(v) for k, v in sd.items()})
    sd._metadata = {"2": {"layout": 4}}  # noqa: SLF001 - what torch.save keeps
    before = _values(m)
    with pytest.raises(ValueError, match=r"2\.: saved with layout 4, this one 3"):
        m.load_state_dict(sd)
    _assert_unchanged(m, before)
    sd._metadata = {"2": {"layout": 3}}  # noqa: SLF001
    m.load_state_dict(sd)
    assert torch.equal(m[0].weight, sd["0.weight"]) and torch.equal(m[2].bias, sd["2.bias"])


def test_a_model_built_before_the_first_plan_has_its_parents_found(monkeypatch):
    """Links registered before torch's hook was installed (a model built before tying's
    engine was imported) are found by one walk at the first plan."""
    from tying.core import load_ancestors

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)}))
    for mod in m.modules():  # as if built before the hook: no registration recorded
        load_ancestors._NEW.pop(id(mod), None)
    monkeypatch.setattr(load_ancestors, "_MAP", [None])  # and no walk made yet
    tying.Plan([tying.share("b", like="a")]).apply(m[1])
    before = _values(m)
    sd = _noise(m) | {"1.b.weight": torch.randn(3, 3)}
    with pytest.raises(RuntimeError, match=r"\(nothing was loaded\):\n\t1\.b\.weight is tied"):
        m.load_state_dict(sd)
    _assert_unchanged(m, before)


class _HashedLate(nn.Module):
    """A module whose ``__hash__`` reads an attribute set after its children (e2cnn's
    ``BlocksBasisExpansion`` does): hashing it while it registers a child raises."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(2, 2)
        self.ready = True

    def __hash__(self):
        return hash(self.ready)

    def __eq__(self, other):
        return self is other


def test_the_registration_hook_never_hashes_or_breaks_other_modules():
    # stop 51: the parents were kept in weak sets, which hash the module: building an
    # e2cnn R2Conv after any tying.nn layer raised AttributeError from inside the hook
    tn.TiedAutoencoder(4, 2)  # a tie exists in the process (the hook is live)
    m = nn.Sequential(nn.Linear(2, 2), _HashedLate(), tn.TiedAutoencoder(4, 2))
    assert m[1].ready
    sd = _noise(m)
    sd["2.decoder.weight"] = torch.randn(4, 2)  # not the encoder's transpose
    before = _values(m)
    with pytest.raises(RuntimeError, match="decoder"):
        m.load_state_dict(sd)
    _assert_unchanged(m, before)  # the module above the tie is still checked first
