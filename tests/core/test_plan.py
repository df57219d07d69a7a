"""Plans: resolution (last match wins), module-level ties, exceptions, errors, atomicity."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import tying

from .helpers import AE, Stack, sgd_step, state_bytes


def test_embedding_tie_is_the_same_object_and_counted_once():
    m = Stack()
    report = tying.Plan([tying.share("lm_head.weight", like="embed.weight")]).apply(m)
    assert m.lm_head.weight is m.embed.weight
    assert report.tied == {"lm_head.weight": "embed.weight"}
    assert "lm_head.weight" not in dict(m.named_parameters())
    assert "lm_head.weight" not in m.state_dict()  # a tie is stored once
    c = tying.count(m)
    assert c.logical - c.physical == m.embed.weight.numel()
    sgd_step(m, m(torch.randint(0, 11, (2, 5))).pow(2).mean())
    assert m.lm_head.weight is m.embed.weight


def test_albert_stack_ties_whole_modules_and_free_makes_exceptions():
    m = Stack(n=4)
    plan = tying.Plan([tying.share("layers.*", like="layers.0"), tying.free("layers.*.norm")])
    report = plan.apply(m)
    for i in (1, 2, 3):
        assert m.layers[i]["fc"].weight is m.layers[0]["fc"].weight
        assert m.layers[i]["fc"].bias is m.layers[0]["fc"].bias
        assert m.layers[i]["norm"].weight is not m.layers[0]["norm"].weight
    assert len(report.tied) == 6  # fc.weight and fc.bias of layers 1..3
    assert report.freed == []  # the norms were never tied: free only wins the match
    # without the exception, the norms are tied too
    m2 = Stack(n=4)
    assert len(tying.Plan([tying.share("layers.*", like="layers.0")]).apply(m2).tied) == 12


def test_last_matching_rule_wins_per_slot():
    m = Stack(n=3)
    tying.Plan(
        [
            tying.share("layers.*.fc.weight", like="layers.0.fc.weight"),
            tying.share("layers.2.fc.weight", like="layers.1.fc.weight"),
        ]
    ).apply(m)
    assert m.layers[1]["fc"].weight is m.layers[0]["fc"].weight
    assert tying.ties(m)[-1] == tying.TieInfo(
        "layers.2.fc.weight", "layers.1.fc.weight", tying.Same()
    )
    # and the chain resolves to the one physical tensor
    assert m.layers[2]["fc"].weight is m.layers[0]["fc"].weight


def test_free_after_share_unties_and_keeps_current_values():
    m = Stack(n=3)
    tying.Plan([tying.share("layers.*", like="layers.0")]).apply(m)
    before = m.layers[2]["fc"].weight.detach().clone()
    report = tying.Plan([tying.free("layers.2")]).apply(m)
    assert sorted(report.freed) == [
        f"layers.2.{p}" for p in ("fc.bias", "fc.weight", "norm.bias", "norm.weight")
    ]
    assert m.layers[2]["fc"].weight is not m.layers[0]["fc"].weight
    assert torch.equal(m.layers[2]["fc"].weight, before)
    assert type(m.layers[2]["fc"]) is nn.Linear  # the class is restored


def test_captures_pair_decoder_with_encoder():
    m = nn.ModuleDict(
        {
            "enc": nn.ModuleList([nn.Linear(4, 3), nn.Linear(3, 2)]),
            "dec": nn.ModuleList([nn.Linear(3, 4), nn.Linear(2, 3)]),
        }
    )
    tying.Plan(
        [tying.share("dec.*.weight", like="enc.*.weight", relation=tying.Transposed())]
    ).apply(m)
    assert torch.equal(m["dec"][0].weight, m["enc"][0].weight.t())
    assert torch.equal(m["dec"][1].weight, m["enc"][1].weight.t())


def test_like_as_mapping_and_callable():
    m = AE()
    m2 = AE()
    tying.Plan(
        [tying.share("dec.weight", like={"dec.weight": "enc.weight"}, relation=tying.Transposed())]
    ).apply(m)
    tying.Plan(
        [
            tying.share(
                "dec.weight", like=lambda p: p.replace("dec", "enc"), relation=tying.Transposed()
            )
        ]
    ).apply(m2)
    assert torch.equal(m.dec.weight, m.enc.weight.t()) and torch.equal(
        m2.dec.weight, m2.enc.weight.t()
    )
    with pytest.raises(tying.TieError, match="mapping has no entry for matched path 'dec.weight'"):
        tying.Plan([tying.share("dec.weight", like={"x": "enc.weight"})]).apply(AE())


def test_apply_is_idempotent():
    m = Stack()
    plan = tying.Plan(
        [
            tying.share("layers.*", like="layers.0"),
            tying.share("lm_head.weight", like="embed.weight"),
        ]
    )
    first = plan.apply(m)
    snap = state_bytes(m)
    second = plan.apply(m)
    assert first.changed and not second.changed
    assert second.unchanged == len(first.tied)
    assert state_bytes(m) == snap


ERRORS = [
    (
        [tying.share("nothing.*", like="embed")],
        r"pattern 'nothing\.\*' matches no parameter or module",
    ),
    (
        [tying.share("lm_head.weight", like="embedd.weight")],
        r"source 'embedd.weight' .* is no parameter; closest: embed.weight",
    ),
    (
        [tying.share("layers.*.fc.weight", like="layers.*.*.weight")],
        r"ambiguous pairing: like='layers.\*.\*.weight' has 2 wildcard\(s\)",
    ),
    (
        [tying.share("lm_head.weight", like="layers.0.fc.weight")],
        r"'lm_head.weight' has shape \(11, 8\) and its source 'layers.0.fc.weight' has shape \(8, 8\)",
    ),
    (
        [tying.share("layers.1", like="lm_head")],
        r"'layers.1.fc.weight' has no counterpart 'lm_head.fc.weight'",
    ),
    (
        [
            tying.share("layers.1.fc.weight", like="layers.0.fc.weight"),
            tying.share("layers.0.fc.weight", like="layers.1.fc.weight"),
        ],
        r"cycle of ties layers.(0|1).fc.weight -> layers.(0|1).fc.weight -> layers.(0|1).fc.weight",
    ),
    (
        [tying.share("layers.0.fc.weight", like="layers.0.fc.weight", relation=tying.Transposed())],
        r"tied to itself",
    ),
    ([tying.share("bn.running_mean", like="bn.running_var")], r"'bn.running_mean' is a buffer"),
    (
        [tying.share("lm_head.weight", like="bn.running_var")],
        r"source 'bn.running_var' .* is a buffer",
    ),
    (
        [tying.share("layers.0.fc.bias", like="layers.1.fc.bias", relation=tying.Rotated())],
        r"Rotated needs a tensor of at least 2 dims",
    ),
]


@pytest.mark.parametrize("rules,match", ERRORS, ids=[m[:30] for _, m in ERRORS])
def test_errors_name_the_problem_and_leave_the_model_unchanged(rules, match):
    m = Stack()
    m.bn = nn.BatchNorm1d(8)
    tying.Plan([tying.share("layers.2", like="layers.0")]).apply(m)  # some prior state
    snap = state_bytes(m)
    with pytest.raises(tying.TieError, match=match):
        tying.Plan(rules).apply(m)
    assert state_bytes(m) == snap
    tying.verify(m)


def test_a_late_error_rolls_back_earlier_valid_rules():
    m = Stack()
    snap = state_bytes(m)
    with pytest.raises(tying.TieError, match="matches no parameter"):
        tying.Plan(
            [tying.share("layers.*", like="layers.0"), tying.share("ghost", like="embed")]
        ).apply(m)
    assert state_bytes(m) == snap
    assert tying.ties(m) == []


def test_dtype_and_device_mismatch_are_errors():
    m = AE()
    m.dec.to(torch.float64)
    with pytest.raises(
        tying.TieError,
        match=r"'dec.weight' is torch.float64 but its source 'enc.weight' is torch.float32",
    ):
        tying.Plan(
            [tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]
        ).apply(m)
    m2 = AE()
    m2.dec.to("meta")
    with pytest.raises(
        tying.TieError,
        # the meta side is named as unloaded or offloaded, with the device_map fix (stop 33)
        match=r"'dec.weight' is on meta but its source 'enc.weight' is on cpu; .*holds no "
        r"data.*keep both ends of the tie out of the offload",
    ):
        tying.Plan(
            [tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]
        ).apply(m2)


def test_storage_name_clash_is_an_error():
    m = nn.ParameterDict(
        {"w": nn.Parameter(torch.randn(5)), "w_physical": nn.Parameter(torch.randn(3))}
    )
    with pytest.raises(
        tying.TieError, match="needs attribute 'w_physical' for its tie, but it exists"
    ):
        tying.Plan([tying.share("w", relation=tying.Mirrored())]).apply(m)


def test_rule_constructors_validate():
    with pytest.raises(ValueError, match=r"share\('x'\) needs a source"):
        tying.share("x")
    with pytest.raises(TypeError, match="relation must be a tying relation"):
        tying.share("x", like="y", relation="T")
    with pytest.raises(TypeError, match=r"Plan rule 0 must be tying.share"):
        tying.Plan(["x"])


def test_assigning_to_a_tied_slot_is_refused_with_the_fix():
    m = AE()
    tying.Plan([tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]).apply(m)
    with pytest.raises(
        tying.TieError,
        match=r"dec.weight is a tied slot of TiedLinear, served from enc.weight via "
        r"Transposed.* untie first",
    ):
        m.dec.weight = nn.Parameter(torch.zeros(6, 3))


def test_report_str_lists_ties():
    m = AE()
    report = tying.Plan(
        [tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]
    ).apply(m)
    assert "dec.weight <- enc.weight" in str(report)
    assert (report.logical, report.physical) == (45, 27)


# -- hand-made ties (one nn.Parameter under two paths) -------------------------------


def _hand_tied():
    m = Stack()
    m.lm_head.weight = m.embed.weight  # the usual hand tie
    m.other = nn.Embedding(11, 8)
    return m


def test_retying_one_end_of_a_hand_tie_is_refused_naming_both_ends():
    m = _hand_tied()
    snap = state_bytes(m)
    for rule, moved, other in [
        (tying.share("embed.weight", like="other.weight"), "embed.weight", "lm_head.weight"),
        (tying.share("lm_head.weight", like="other.weight"), "lm_head.weight", "embed.weight"),
        (
            tying.share("lm_head.weight", like="embed.weight", relation=tying.Scaled(2.0)),
            "lm_head.weight",
            "embed.weight",
        ),
    ]:
        with pytest.raises(
            tying.TieError,
            match=rf"'{moved}' and '{other}' are one nn.Parameter \(a hand-made tie, as in "
            rf"`model.lm_head.weight = model.embed.weight`\).*would silently split them; "
            rf"declare both ends: add tying.share\('{other}', like='{moved}'\).* or "
            rf"tying.free\('{other}'\)",
        ):
            tying.Plan([rule]).apply(m)
        assert state_bytes(m) == snap and m.lm_head.weight is m.embed.weight


def test_retying_both_ends_of_a_hand_tie_keeps_them_together():
    m = _hand_tied()
    tying.Plan(
        [
            tying.share("embed.weight", like="other.weight"),
            tying.share("lm_head.weight", like="embed.weight"),
        ]
    ).apply(m)
    assert m.lm_head.weight is m.other.weight and m.embed.weight is m.other.weight
    sgd_step(m, m(torch.randint(0, 11, (2, 5))).pow(2).mean())
    assert m.lm_head.weight is m.embed.weight
    tying.verify(m)


def test_free_one_end_of_a_hand_tie_gives_it_its_own_copy():
    m = _hand_tied()
    value = m.embed.weight.detach().clone()
    report = tying.Plan([tying.free("lm_head.weight")]).apply(m)
    assert report.freed == ["lm_head.weight"]
    assert m.lm_head.weight is not m.embed.weight and torch.equal(m.lm_head.weight, value)
    assert tying.ties(m) == [] and tying.count(m).ratio == 1.0
    tying.verify(m)


def test_declaring_an_existing_hand_tie_adopts_it_and_verify_then_watches_it():
    m = _hand_tied()
    report = tying.Plan([tying.share("lm_head.weight", like="embed.weight")]).apply(m)
    assert not report.changed and "weight" in m.lm_head._parameters  # kept as it is
    assert tying.verify(m) == 1
    m.lm_head.weight = nn.Parameter(m.embed.weight.detach().clone())  # breaks it silently
    with pytest.raises(
        tying.TieError,
        match=r"lm_head.weight: is no longer the same nn.Parameter as embed.weight",
    ):
        tying.verify(m)
    tying.retie(m)
    assert m.lm_head.weight is m.embed.weight and tying.verify(m) == 1


def test_a_plan_on_other_slots_of_a_hand_tied_model_keeps_the_hand_tie():
    m = _hand_tied()
    tying.Plan([tying.share("layers.*", like="layers.0")]).apply(m)
    assert m.lm_head.weight is m.embed.weight
    assert tying.ties(m)[-1] == tying.TieInfo("lm_head.weight", "embed.weight", tying.Same(), True)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_a_torchscript_target_is_refused_up_front_naming_the_module():
    m = nn.ModuleDict({"a": nn.Linear(3, 3), "b": torch.jit.script(nn.Linear(3, 3))})
    snap = state_bytes(m)
    with pytest.raises(
        tying.TieError,
        match=r"'b.weight' lives in a TorchScript module \('b', RecursiveScriptModule\).*"
        r"before torch.jit.script",
    ):
        tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
    assert state_bytes(m) == snap
    # a scripted module may still be a source
    m2 = nn.ModuleDict({"a": torch.jit.script(nn.Linear(3, 3)), "b": nn.Linear(3, 3)})
    tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m2)
    assert m2["b"].weight is m2["a"].weight


# -- the rollback path itself: a failure halfway through the mutation -----------------


def _deep_snapshot(model):
    """Class, __dict__ keys, and the identity of every value (dict values item by item)."""
    snap = []
    for path, mod in model.named_modules(remove_duplicate=False):
        entries = {}
        for key, value in mod.__dict__.items():
            if isinstance(value, dict):
                entries[key] = (id(value), {k: id(v) for k, v in value.items()})
            else:
                entries[key] = id(value)
        snap.append((path, type(mod), entries))
    return snap


@pytest.mark.parametrize("fail_at", [1, 2, 3, 5])
def test_a_failure_halfway_through_the_mutation_leaves_the_model_bit_identical(
    monkeypatch, fail_at
):
    import tying.core.plan as plan_module

    m = Stack(n=4)
    m.extra = nn.Linear(8, 11, bias=False)
    m.extra.weight = m.lm_head.weight  # a hand tie the plan adopts
    tying.Plan(
        [
            tying.share("layers.3", like="layers.0"),
            tying.share("layers.2.fc.bias", relation=tying.Mirrored()),
        ]
    ).apply(m)
    plan = tying.Plan(
        [
            tying.share("layers.*", like="layers.0"),
            tying.free("layers.3.norm"),
            tying.share(
                "layers.1.norm.weight", like="layers.0.norm.weight", relation=tying.Scaled()
            ),
            tying.share("lm_head.weight", like="embed.weight"),
            tying.share("extra.weight", like="embed.weight"),
        ]
    )
    before_bytes, before = state_bytes(m), _deep_snapshot(m)
    before_ties = tying.ties(m)
    real, calls = plan_module.install, []

    def failing_install(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("injected failure in install")
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module, "install", failing_install)
    with pytest.raises(RuntimeError, match="injected failure in install") as info:
        plan.apply(m)
    if sys.version_info >= (3, 11):  # the error names the tie it was making (stop 31)
        assert "the model was left as it was" in "".join(info.value.__notes__)
        assert "tying: raised while tying it to" in info.value.__notes__[0]
    assert len(calls) == fail_at  # it did fail halfway: earlier installs had happened
    assert _deep_snapshot(m) == before
    assert state_bytes(m) == before_bytes and tying.ties(m) == before_ties
    tying.verify(m)
    monkeypatch.setattr(plan_module, "install", real)
    plan.apply(m)  # and the same plan still applies cleanly afterwards
    assert m.layers[3]["fc"].weight is m.layers[0]["fc"].weight
    assert m.extra.weight is m.embed.weight and tying.verify(m) > 0


def test_resolve_changes_nothing_and_commit_applies_exactly_its_changes():
    m = Stack()
    before, before_bytes = _deep_snapshot(m), state_bytes(m)
    res = tying.Plan([tying.share("lm_head.weight", like="embed.weight")]).resolve(m)
    assert [c.path for c in res.changes] == ["lm_head.weight"]
    assert _deep_snapshot(m) == before and state_bytes(m) == before_bytes
    res.commit()
    assert m.lm_head.weight is m.embed.weight
    with pytest.raises(tying.TieError, match="already committed; resolve the plan again"):
        res.commit()


def test_commit_refuses_a_model_that_changed_since_resolve():
    m = Stack()
    res = tying.Plan([tying.share("layers.*", like="layers.0")]).resolve(m)
    m.layers[1]["fc"] = nn.Linear(8, 8)  # replaced between the phases
    snap = state_bytes(m)
    with pytest.raises(tying.TieError, match="model changed between Plan.resolve and"):
        res.commit()
    assert state_bytes(m) == snap and tying.ties(m) == []


# Stop 26 review: tying a frozen parameter to a trained one used to succeed and
# silently train the frozen member (or freeze the trained one).
@pytest.mark.parametrize("frozen", ["a.weight", "c.weight"])
def test_share_refuses_mixed_requires_grad_and_leaves_model_unchanged(frozen):
    torch.manual_seed(0)
    m = nn.ModuleDict({"a": nn.Linear(4, 6), "c": nn.Linear(4, 6)})
    m.get_submodule(frozen.split(".")[0]).weight.requires_grad_(False)
    before = {n: (p, p.detach().clone(), p.requires_grad) for n, p in m.named_parameters()}
    with pytest.raises(tying.TieError, match=r"requires_grad=.*set requires_grad_\(\) the same"):
        tying.Plan([tying.share("c.weight", like="a.weight")]).apply(m)
    after = dict(m.named_parameters())
    assert after.keys() == before.keys()
    for n, (p, v, rg) in before.items():
        assert after[n] is p and torch.equal(p, v) and p.requires_grad == rg
    m.c.weight.requires_grad_(m.a.weight.requires_grad)
    tying.Plan([tying.share("c.weight", like="a.weight")]).apply(m)
    assert m.c.weight is m.a.weight


# Stop 26 review: a member under torch.nn.utils.parametrize was reported as "matches
# no parameter", which sends the user looking for a typo.
@pytest.mark.parametrize("rule", [("c.weight", "a.weight"), ("a.weight", "c.weight")])
def test_parametrized_member_is_named_as_such(rule):
    import torch.nn.utils.parametrize as parametrize

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    m = nn.ModuleDict({"a": nn.Linear(4, 6), "c": nn.Linear(4, 6)})
    parametrize.register_parametrization(m.c, "weight", Double())
    target, source = rule
    with pytest.raises(
        tying.TieError,
        match=r"'c.weight' is under torch.nn.utils.parametrize.*remove_parametrizations",
    ):
        tying.Plan([tying.share(target, like=source)]).apply(m)
    assert parametrize.is_parametrized(m.c, "weight") and m.a.weight is not m.c.weight


@pytest.mark.parametrize(
    "build,match",
    [
        # stop 34: these were built, and failed at apply as "a pattern must be a non-empty
        # str, got 3", naming neither the rule nor the field
        (
            lambda: tying.share(3, like="b"),
            r"share: target must be a non-empty str .* got 3 \(int\)",
        ),
        (
            lambda: tying.share("", like="b"),
            r"share: target must be a non-empty str .* got '' \(str\)",
        ),
        (
            lambda: tying.share("a", like=""),
            r"share\('a'\): like must be a non-empty str .* got ''",
        ),
        (
            lambda: tying.free(None),
            r"free: target must be a non-empty str .* got None \(NoneType\)",
        ),
        (
            lambda: tying.free(("a",)),
            r"free: target must be a non-empty str .* got \('a',\) \(tuple\)",
        ),
    ],
)
def test_a_rule_with_a_target_that_is_no_pattern_is_refused_when_built(build, match):
    with pytest.raises(TypeError, match=match):
        build()


def test_a_plan_of_a_set_or_a_bare_rule_is_refused():
    """Stop 34: a set of overlapping rules was applied in hash order, so whether
    share(...) or the free(...) after it won changed between runs; a bare rule failed
    in Python's words."""
    rules = {tying.share("b", like="a"), tying.free("b.bias")}
    with pytest.raises(TypeError, match=r"Plan takes an ordered sequence of rules .* got set"):
        tying.Plan(rules)
    with pytest.raises(TypeError, match=r"got the single rule share\('b', like='a'\); wrap it"):
        tying.Plan(tying.share("b", like="a"))
    with pytest.raises(TypeError, match=r"an ordered sequence of rules .* got str 'b'"):
        tying.Plan("b")
    m = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)})
    tying.Plan(r for r in [tying.share("b", like="a"), tying.free("b.bias")]).apply(m)
    assert m["b"].weight is m["a"].weight and m["b"].bias is not m["a"].bias


# -- stop 35: self-ties and cycles -------------------------------------------------------


def _stack_with_source():
    torch.manual_seed(0)
    return nn.ModuleDict(
        {"src": nn.Linear(3, 3), "layers": nn.ModuleList(nn.Linear(3, 3) for _ in range(3))}
    )


def test_a_module_tied_to_itself_by_name_is_refused():
    # share("layers.0", like="layers.0") tied nothing and raised nothing
    m = _stack_with_source()
    before = state_bytes(m)
    with pytest.raises(tying.TieError, match=r"rule 0 .*every slot it matches reads itself"):
        tying.Plan([tying.share("layers.0", like="layers.0")]).apply(m)
    assert state_bytes(m) == before and tying.ties(m) == []


def test_an_albert_rule_over_an_earlier_tie_of_layer_0_is_refused_naming_both_rules():
    # the Plan kept layers.0 -> src while tying.core.resolver.resolve (HMM, fit) gave
    # layers.0 its own value: "reads itself" meant two things
    m = _stack_with_source()
    first, albert = tying.share("layers.0", like="src"), tying.share("layers.*", like="layers.0")
    before = state_bytes(m)
    with pytest.raises(
        tying.TieError,
        match=r"rule 1 .*'layers\.0\.weight' reads itself .*rule 0 share\('layers\.0', "
        r"like='src'\) ties it to 'src\.weight'.*move rule 0 after",
    ):
        tying.Plan([first, albert]).apply(m)
    assert state_bytes(m) == before and tying.ties(m) == []
    tying.Plan([albert, first]).apply(m)  # the first fix the message gives
    assert m.layers[0].weight is m.src.weight and m.layers[2].weight is m.src.weight
    m = _stack_with_source()
    tying.Plan([first, tying.free("layers.0"), albert]).apply(m)  # the second
    assert m.layers[0].weight is not m.src.weight and m.layers[2].weight is m.layers[0].weight
    one = nn.ModuleDict({"layers": nn.ModuleList([nn.Linear(2, 2)])})
    assert not tying.Plan([albert]).apply(one).changed  # a stack of one layer ties nothing


@pytest.mark.parametrize(
    "rules",
    [
        [tying.share("layers.0", like="layers.1"), tying.share("layers.1", like="layers.0")],
        [
            tying.share("layers.0.weight", like="layers.1.weight", relation=tying.Transposed()),
            tying.share("layers.1.weight", like="layers.2.weight", relation=tying.Scaled()),
            tying.share("layers.2.weight", like="layers.0.weight", relation=tying.Transposed()),
        ],
        [tying.share("layers.0.weight", like="layers.0.weight", relation=tying.Transposed())],
    ],
    ids=["two", "relation-chain", "self-relation"],
)
def test_a_cycle_is_refused_by_name_before_anything_changes(rules):
    m = _stack_with_source()
    before = state_bytes(m)
    with pytest.raises(tying.TieError, match=r"layers\.0\.weight.*cycle"):
        tying.Plan(rules).apply(m)
    assert state_bytes(m) == before and tying.ties(m) == []


def test_a_cycle_through_a_tie_made_by_an_earlier_plan_is_refused():
    m = _stack_with_source()
    tying.Plan([tying.share("layers.1", like="layers.0")]).apply(m)
    with pytest.raises(tying.TieError, match=r"cycle of ties layers\.0\.\w+ -> layers\.1"):
        tying.Plan([tying.share("layers.0", like="layers.1")]).apply(m)
    assert m.layers[1].weight is m.layers[0].weight


@pytest.mark.parametrize(
    "relation",
    [tying.Transposed(), tying.Scaled(0.5), tying.Rotated(), tying.Flipped((0,))],
    ids=repr,
)
def test_a_relation_rule_over_its_own_source_then_free_of_the_source_applies(relation):
    # stop 37: share("layers.*.weight", like="layers.0.weight", relation=...) matches the
    # source too; a later free("layers.0.weight") takes it out (the last matching rule
    # wins), but rule 0 was refused as a cycle before the free was read
    m = _stack_with_source()
    albert = tying.share("layers.*.weight", like="layers.0.weight", relation=relation)
    tying.Plan([albert, tying.free("layers.0.weight")]).apply(m)
    assert {t.target for t in tying.ties(m)} == {"layers.1.weight", "layers.2.weight"}
    assert tying.verify(m) == 2
    w = m.layers[0].weight
    extra = {"scale": m.layers[2].weight_scale} if type(relation) is tying.Scaled else {}
    assert torch.equal(m.layers[2].weight, relation(w, shape=(3, 3), **extra))
    sgd_step(m, m.layers[2](m.layers[1](m.layers[0](torch.ones(2, 3)))).pow(2).sum())
    assert torch.equal(m.layers[2].weight, relation(m.layers[0].weight, shape=(3, 3), **extra))
    # without the free, the self-tie is still refused, naming the fix
    m = _stack_with_source()
    before = state_bytes(m)
    with pytest.raises(
        tying.TieError,
        match=r"rule 0 .*'layers\.0\.weight' is tied to itself .*a cycle; take it out with a "
        r"later tying\.free\('layers\.0\.weight'\)",
    ):
        tying.Plan([albert]).apply(m)
    assert state_bytes(m) == before and tying.ties(m) == []
