"""peft configs that reach some uses of a tie only: refused with advice that works (stop 58).

Two ways ``tying.interop.lora.get_peft_model`` refused with advice that failed when
followed:

- ``exclude_modules`` / ``layers_to_transform`` leaving out one path of a module tied
  whole (an ALBERT-style stack): the refusal said "leave 'layers.0.q' out of
  target_modules"; doing so named 'layers.1.q', and so on until no adapter was left.
- ``target_parameters`` (peft's LoRA on a Parameter) on a tied tensor: refused after
  wrapping with "Use tying.interop.lora.get_peft_model", the very call that refused.

Now both are refused before peft runs, naming the group or the entry and the tie, and
each fix the message gives is run below and accepted (merged model = adapter model).
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

import tying
from tests.interop.stack_models import Block

peft = pytest.importorskip("peft", reason="the interop extra (peft) is not installed")
from tying.interop.lora import get_peft_model, merge_and_unload  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Net(nn.Module):
    """An embedding, an ALBERT-style stack of three blocks, an untied mix, a head tied to the
    embedding."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(11, 8)
        self.layers = nn.ModuleList([Block() for _ in range(3)])
        self.mix = nn.Linear(8, 8)  # untied
        self.head = nn.Linear(8, 11, bias=False)

    def forward(self, ids):
        h = self.emb(ids)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.mix(h))


PLAN = tying.Plan(
    [tying.share("layers.*", like="layers.0"), tying.share("head.weight", like="emb.weight")]
)
X = torch.tensor([[1, 4, 7, 2, 9]])
Q = ["layers.0.q", "layers.1.q", "layers.2.q"]


def _net(hand: bool = False) -> Net:
    net = Net()
    if hand:  # one Parameter in two modules, as HF's tie_word_embeddings makes it
        net.head.weight = net.emb.weight
        tying.Plan([tying.share("layers.*", like="layers.0")]).apply(net)
    else:
        PLAN.apply(net)
    return net


def _config(**kw):
    return peft.LoraConfig(r=2, init_lora_weights=False, **kw)


def _refused(net: Net, config, match: str) -> str:
    before = [(p, id(m)) for p, m in net.named_modules(remove_duplicate=False)]
    ties = tying.verify(net)
    with pytest.raises(tying.TieError, match=match) as err:
        get_peft_model(net, config)
    assert [(p, id(m)) for p, m in net.named_modules(remove_duplicate=False)] == before
    assert tying.verify(net) == ties
    return str(err.value)


def _follow(msg: str, net: Net) -> None:
    """Run the tying.Plan(...).apply(model) the message gives, on ``net``."""
    code = re.findall(r"tying\.Plan\(\[.*?\]\)\.apply\(model\)", msg)
    assert code, msg
    for line in code:
        exec(line, {"tying": tying, "model": net})


def _accepted(net: Net, config) -> bool:
    """Accepted, verified, merged = adapter model; True when one adapter serves all three q."""
    pm = get_peft_model(net, config).eval()
    assert tying.verify(pm) > 0
    layers = pm.base_model.model.layers
    shared = layers[1].q is layers[0].q is layers[2].q and hasattr(layers[0].q, "lora_A")
    with torch.no_grad():
        adapted = pm(X)
        merged = merge_and_unload(pm)(X)
    assert torch.allclose(merged, adapted, atol=1e-6)
    return shared


@pytest.mark.parametrize(
    "settings, out, why",
    [
        (dict(exclude_modules=["layers.2.q"]), ["layers.2.q"], "exclude_modules"),
        (dict(layers_to_transform=[1], layers_pattern="layers"), Q[::2], "layers_to_transform"),
        (dict(layers_to_transform=[0], layers_pattern="layers"), Q[1:], "layers_to_transform"),
    ],
    ids=["exclude-a-tied-path", "only-a-tied-layer", "only-the-source-layer"],
)
def test_a_group_targeted_in_part_names_the_group_and_its_free_fix_is_accepted(settings, out, why):
    config = _config(target_modules=["q"], **settings)
    msg = _refused(
        _net(),
        config,
        rf"the modules at \['layers.0.q', 'layers.1.q', 'layers.2.q'\] are one module tied "
        rf"whole, but the config targets .* leaves out {re.escape(str(out))} \({why}",
    )
    assert "out of target_modules" not in msg  # the old advice, which looped
    net = _net()
    _follow(msg, net)
    assert not _accepted(net, config)  # the freed paths run their own copy


def test_every_path_of_the_group_is_accepted_as_the_message_says():
    net = _net()
    assert _accepted(
        net, _config(target_modules=["q"], layers_to_transform=[0, 1, 2], layers_pattern="layers")
    )


def test_target_parameters_on_a_tied_stack_names_the_modules_to_target_instead():
    msg = _refused(
        _net(),
        _config(target_modules=[], target_parameters=["q.weight"]),
        r"target_parameters entry 'q.weight' matches 'layers.0.q.weight', which takes part in "
        r"the tie layers.\d.q.weight <- layers.0.q.weight",
    )
    assert "tying.interop.lora.get_peft_model" not in msg  # the old advice: the same call
    named = re.search(r"target_modules=(\[.*?\])", msg).group(1)
    assert named == str(Q)
    net = _net()
    assert _accepted(net, _config(target_modules=Q))


@pytest.mark.parametrize("hand", [False, True], ids=["plan-tie", "hand-tie"])
@pytest.mark.parametrize("entry", ["head.weight", "emb.weight"])
def test_target_parameters_on_a_head_tie_is_refused_and_freeing_the_head_is_accepted(entry, hand):
    kind = "the hand-made tie" if hand else "the tie"
    msg = _refused(
        _net(hand),
        _config(target_modules=[], target_parameters=[entry]),
        rf"target_parameters entry '{entry}' matches '{entry}', which takes part in {kind} "
        r"head.weight <- emb.weight",
    )
    net = _net(hand)
    _follow(msg, net)
    assert net.head.weight is not net.emb.weight
    _accepted(net, _config(target_modules=[], target_parameters=[entry]))


def test_target_parameters_on_an_untied_tensor_of_a_tied_model_is_accepted():
    net = _net()
    assert not _accepted(net, _config(target_modules=[], target_parameters=["mix.weight"]))
    assert tying.verify(net) == tying.verify(_net())


def test_add_adapter_on_part_of_a_group_names_the_group_and_its_free_fix_is_accepted():
    # the old refusal went pair by pair: "Target both (['layers.0.q', 'layers.2.q'])", then,
    # followed, "Target both (['layers.0.q', 'layers.1.q'])"
    net = _net()
    pm = get_peft_model(net, _config(target_modules=["mix"]))
    config = _config(target_modules=["layers.0.q", "layers.1.q"])
    with pytest.raises(
        tying.TieError,
        match=r"add_adapter\('b'\): the modules at \['layers.0.q', 'layers.1.q', 'layers.2.q'\] "
        r"are one module tied whole, but the config targets .* leaves out \['layers.2.q'\]",
    ) as err:
        pm.add_adapter("b", config)
    assert list(pm.peft_config) == ["default"] and not hasattr(net.layers[0].q, "lora_A")
    _follow(str(err.value), net)
    pm.add_adapter("b", config)
    pm.set_adapter("b")
    assert net.layers[1].q is net.layers[0].q and net.layers[2].q is not net.layers[0].q
    with torch.no_grad():
        adapted = pm(X)
        merged = merge_and_unload(pm)(X)
    assert torch.allclose(merged, adapted, atol=1e-6)


NOT_EXCLUDED = ".*no modules were excluded"


def test_adding_an_adapter_with_tyings_own_exclusions_does_not_warn_about_them(tmp_path):
    # peft warned "You have passed exclude_modules=(?P<tying_shared>...) but no modules were
    # excluded. Please check that exclude_modules was set correctly" (a setting the user
    # never made; an error where warnings are errors) at load_adapter of a saved shared
    # adapter and at add_weighted_adapter, which copies the first adapter's config
    get_peft_model(_net(), _config(target_modules=["q"])).save_pretrained(tmp_path)
    pm = get_peft_model(_net(), _config(target_modules=["q"]))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=NOT_EXCLUDED)
        pm.load_adapter(str(tmp_path), adapter_name="saved")
        pm.base_model.add_weighted_adapter(["default", "saved"], [0.5, 0.5], "sum", "linear")
    layers = pm.base_model.model.layers
    assert layers[2].q is layers[0].q and {"saved", "sum"} <= set(layers[0].q.lora_A)
    tying.verify(pm)


def test_a_users_own_exclusion_that_matches_nothing_still_warns():
    pm = get_peft_model(_net(), _config(target_modules=["q"]))
    with pytest.warns(UserWarning, match=NOT_EXCLUDED):
        pm.add_adapter("b", _config(target_modules=["mix"], exclude_modules=["nothing"]))
