"""Torch utilities that mutate modules in place, on tied models: each either keeps the
tie right (verify passes, counts right) or is refused loudly with the model unchanged."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.utils.parametrizations as PZ
from torch import nn
from torch.nn.utils import parametrize, prune
from torch.nn.utils.fusion import fuse_conv_bn_eval

import tying

from .helpers import state_bytes

SAME, ROTATED, SCALED = tying.Same(), tying.Rotated(), tying.Scaled(2.0)


class Net(nn.Module):
    """a -> b -> c, with c.weight tied to a.weight (4x4: every relation fits)."""

    def __init__(self, relation):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        tying.Plan([tying.share("c.weight", like="a.weight", relation=relation)]).apply(self)

    def forward(self, x):
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))


class Sym(nn.Module):
    def forward(self, X):
        return (X + X.T) / 2


def _x(m):
    p = m.a.bias
    return torch.randn(3, 4, dtype=p.dtype, device=p.device)


@pytest.mark.parametrize("relation", [SAME, SCALED])
def test_global_unstructured_over_a_tied_slot_is_refused_before_it_prunes_anything(relation):
    m = Net(relation)
    before = state_bytes(m)
    pairs = [(m.a, "weight"), (m.b, "weight"), (m.c, "weight")]  # c comes last
    with pytest.raises(
        tying.TieError,
        match=r"global_unstructured: 'c.weight' is a tied slot \(reads a.weight via .*nothing "
        r"was pruned. List the physical tensor \(a.weight\) once",
    ):
        prune.global_unstructured(pairs, prune.L1Unstructured, amount=0.3)
    assert state_bytes(m) == before
    assert not prune.is_pruned(m.a) and not prune.is_pruned(m.b)
    assert not hasattr(m.c, "weight_mask")  # outside torch's prune module: a plain False


def test_global_unstructured_over_a_slot_on_its_own_storage_names_that_storage():
    # a tie with no source reads its own storage parameter: the refusal names it, since
    # that is what to list instead (not the words "its own storage")
    m = nn.Sequential(nn.Linear(4, 4))
    tying.Plan([tying.share("0.weight", relation=tying.Mirrored())]).apply(m)
    own = [n for n, _ in m.named_parameters() if n.startswith("0.weight")]
    assert len(own) == 1 and own[0] != "0.weight"
    with pytest.raises(
        tying.TieError,
        match=rf"'0.weight' is a tied slot \(reads {own[0]} via .*List the physical tensor "
        rf"\({own[0]}\) once",
    ):
        prune.global_unstructured([(m[0], "weight")], prune.L1Unstructured, amount=0.3)
    with pytest.raises(tying.TieError, match=rf"'0.weight' \(reads {own[0]} via Mirrored"):
        prune.l1_unstructured(m[0], "weight", amount=0.3)


def test_global_unstructured_over_a_rotated_slot_is_refused_before_any_change():
    # a Rotated slot is served contiguous (so torch no longer fails first on a strided
    # view): tying's own guard refuses the tied slot by name, nothing pruned
    m = Net(ROTATED)
    before = state_bytes(m)
    with pytest.raises(tying.TieError, match=r"'c\.weight' is a tied slot.*nothing was pruned"):
        prune.global_unstructured(
            [(m.a, "weight"), (m.c, "weight")], prune.L1Unstructured, amount=0.3
        )
    assert state_bytes(m) == before


@pytest.mark.parametrize("relation", [SAME, ROTATED])
def test_global_unstructured_over_the_physical_tensors_keeps_the_tie(relation):
    m = Net(relation)
    prune.global_unstructured([(m.a, "weight"), (m.b, "weight")], prune.L1Unstructured, amount=0.5)
    want = relation(
        m.a.weight_orig * m.a.weight_mask,
        shape=(4, 4),
        **({"scale": m.c.weight_scale} if relation is SCALED else {}),
    )
    assert torch.equal(m.c.weight, want)
    assert tying.verify(m) == 1 and tying.count(m).physical == 3 * 4 + 2 * 16
    m(_x(m)).sum().backward()  # the tie still trains


@pytest.mark.parametrize(
    "tool",
    [
        lambda mod: parametrize.register_parametrization(mod, "weight", Sym()),
        PZ.spectral_norm,
        PZ.weight_norm,
    ],
    ids=[
        "register_parametrization",
        "parametrizations.spectral_norm",
        "parametrizations.weight_norm",
    ],
)
@pytest.mark.parametrize("relation", [SAME, ROTATED])
def test_parametrizing_a_tied_slot_is_refused_naming_the_tie(tool, relation):
    m = Net(relation)
    before = state_bytes(m)
    # torch's ValueError named no fix before stop 59; the untie it names works
    with pytest.raises(
        tying.TieError,
        match=r"^torch\.nn\.utils\.parametrize: c\.weight is a tied slot of TiedLinear "
        r"\(reads a\.weight via .*Untie it first \(tying\.Plan\(\[tying\.free\('c\.weight'\)\]\)",
    ):
        tool(m.c)
    assert state_bytes(m) == before and tying.verify(m) == 1


@pytest.mark.parametrize(
    "tool, error, match",
    [
        # spectral_norm indexes _parameters: its missing key names the tie (stop 56b)
        (torch.nn.utils.spectral_norm, tying.TieError, r"spectral_norm: c\.weight is a tied slot"),
        # weight_norm reads the slot first: the read names the tie (stop 56)
        (torch.nn.utils.weight_norm, tying.TieError, r"weight_norm: c\.weight is a tied slot"),
    ],
    ids=["spectral_norm", "weight_norm"],
)
def test_the_old_hook_based_norms_on_a_tied_slot_fail_before_any_change(tool, error, match):
    m = Net(SAME)
    before = state_bytes(m)
    with warnings.catch_warnings(), pytest.raises(error, match=match):
        warnings.simplefilter("ignore", FutureWarning)  # weight_norm is deprecated
        tool(m.c)
    assert state_bytes(m) == before


@pytest.mark.parametrize(
    "tool",
    [
        lambda mod: parametrize.register_parametrization(mod, "weight", Sym()),
        lambda mod: torch.nn.utils.spectral_norm(mod),
        PZ.weight_norm,
    ],
    ids=["register_parametrization", "spectral_norm", "parametrizations.weight_norm"],
)
def test_reparametrising_a_tie_source_is_refused_at_the_next_read(tool):
    # The old spectral_norm sets a.weight in a.forward's pre-hook: a tied use read a
    # stale tensor silently. Every such source is now refused, naming the tie and the fix.
    m = Net(ROTATED)
    tool(m.a)
    with pytest.raises(
        tying.TieError,
        match=r"c.weight reads a.weight, which is no longer a parameter of its module.*"
        r"remove it \(torch\.nn\.utils\.(parametrize\.remove_parametrizations|remove_spectral_norm)"
        r"\(model\.get_submodule\('a'\)",  # the remover that undoes it (stop 61)
    ):
        m(_x(m))


def test_fuse_conv_bn_eval_on_a_tied_conv_is_refused_and_leaves_the_model_alone():
    m = nn.ModuleDict({"a": nn.Conv2d(2, 2, 3), "b": nn.Conv2d(2, 2, 3), "bn": nn.BatchNorm2d(2)})
    m.eval()
    tying.Plan([tying.share("b.weight", like="a.weight")]).apply(m)
    before = state_bytes(m)
    # fuse_conv_bn_eval deep-copies the conv first: a part without its tie's source, refused
    # there since stop 31 (before, at its assignment of the fused weight to the tied slot);
    # the refusal names fuse_conv_bn_eval since stop 57 (it named a deepcopy)
    with pytest.raises(
        tying.TieError, match=r"fusion\.fuse_conv_bn_eval deep-copies 'b'.* a\.weight"
    ):
        fuse_conv_bn_eval(m["b"], m["bn"])
    assert state_bytes(m) == before and tying.verify(m) == 1


@pytest.mark.parametrize("relation", [SAME, ROTATED, SCALED])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_to_dtype_keeps_every_tie(relation, dtype):
    m = Net(relation).to(dtype)
    assert m.c.weight.dtype == dtype and m(_x(m)).dtype == dtype
    assert tying.verify(m) == 1 and tying.count(m).physical == 3 * 4 + 2 * 16 + (relation is SCALED)
    m.half()
    assert m.c.weight.dtype == torch.float16 and tying.verify(m) == 1


@pytest.mark.parametrize("relation", [SAME, ROTATED])
def test_to_meta_then_to_empty_keeps_the_tie(relation):
    m = Net(relation).to("meta")
    assert m.c.weight.is_meta and tying.verify(m) == 1
    m.to_empty(device="cpu")
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    assert torch.equal(m.c.weight, relation(m.a.weight, shape=(4, 4)))
    assert tying.verify(m) == 1


def _xavier(mod):
    if isinstance(mod, nn.Linear):
        nn.init.xavier_uniform_(mod.weight)


def test_apply_init_on_a_same_tie_initialises_the_one_parameter():
    m = Net(SAME)
    m.apply(_xavier)
    assert m.c.weight is m.a.weight and tying.verify(m) == 1


def test_apply_init_on_a_computed_tie_is_refused_at_the_next_read():
    m = Net(ROTATED)
    src = m.a.weight.detach().clone()
    m.apply(_xavier)  # a and b are re-initialised; c's write goes to a temporary
    with pytest.raises(tying.TieError, match=r"c.weight was written in place .*write to a.weight"):
        m(_x(m))
    assert not torch.equal(m.a.weight, src)  # a's own init stands (it is a's, not c's)
    assert torch.equal(m.c.weight, torch.rot90(m.a.weight, 1, (-2, -1)))


@pytest.mark.parametrize("relation", [SAME, ROTATED])
def test_vector_to_parameters_writes_each_physical_tensor_once(relation):
    m = Net(relation)
    vec = torch.nn.utils.parameters_to_vector(m.parameters())
    assert vec.numel() == tying.count(m).physical == 3 * 4 + 2 * 16
    torch.nn.utils.vector_to_parameters(torch.arange(vec.numel(), dtype=vec.dtype), m.parameters())
    assert torch.equal(m.c.weight, relation(m.a.weight, shape=(4, 4)))
    assert tying.verify(m) == 1


@pytest.mark.parametrize("relation", [SAME, ROTATED])
def test_clip_grad_norm_counts_a_tied_gradient_once(relation):
    m = Net(relation)
    m(_x(m)).pow(2).sum().backward()
    grads = [p.grad.detach().clone() for p in m.parameters()]
    want = torch.cat([g.reshape(-1) for g in grads]).norm()
    total = torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm=1e-3)
    torch.testing.assert_close(total, want)
    for p, g in zip(m.parameters(), grads):
        torch.testing.assert_close(p.grad, g * (1e-3 / (want + 1e-6)))
    assert tying.verify(m) == 1


@pytest.mark.parametrize(
    "tool,undo",
    [
        (
            lambda mod: parametrize.register_parametrization(mod, "weight", nn.Identity()),
            lambda mod: parametrize.remove_parametrizations(mod, "weight"),
        ),
        (torch.nn.utils.weight_norm, torch.nn.utils.remove_weight_norm),
        (PZ.weight_norm, lambda mod: parametrize.remove_parametrizations(mod, "weight")),
    ],
    ids=["register_parametrization", "weight_norm", "parametrizations.weight_norm"],
)
@pytest.mark.parametrize("call", ["count", "verify", "untie", "save"])
def test_count_verify_untie_save_on_a_reparametrised_source_name_it_then_a_retie_repairs(
    tool, undo, call, tmp_path
):
    # they raised a bare KeyError('a.weight') (verify too, when the read itself passed)
    m = Net(SAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's note on the old weight_norm
        tool(m.a)
    before = state_bytes(m)
    args = (tmp_path / "m.safetensors",) if call == "save" else ()
    with pytest.raises(
        tying.TieError,
        match=r"(a.weight is no longer a parameter of its module \(c.weight reads it\)|"
        r"c.weight reads a.weight, which is no longer a parameter of its module).*"
        r"(remove_parametrizations|remove_weight_norm)\(model\.get_submodule\('a'\)",
    ):  # stop 61: the one remover that undoes what was applied, with the module's path
        getattr(tying, call)(m, *args)
    assert state_bytes(m) == before and not (tmp_path / "m.safetensors").exists()
    undo(m.a)
    tying.Plan([tying.share("c.weight", like="a.weight")]).apply(m)
    tying.verify(m)
    assert m.c.weight is m.a.weight and tying.count(m).physical == 3 * 20 - 16


class Double(nn.Module):
    def forward(self, X):
        return 2 * X


def _with_parametrized_bias(relation, order):
    """Net with c.weight tied and c.bias parametrized, the tie made first or last."""
    if order == "tie first":
        m = Net(relation)
        parametrize.register_parametrization(m.c, "bias", Double())
        return m
    torch.manual_seed(0)
    m = Net.__new__(Net)
    nn.Module.__init__(m)
    m.a, m.b, m.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
    parametrize.register_parametrization(m.c, "bias", Double())
    tying.Plan([tying.share("c.weight", like="a.weight", relation=relation)]).apply(m)
    return m


def _reference(m, relation, x):  # c by hand: its tied weight and its doubled bias
    h = torch.tanh(m.b(torch.tanh(m.a(x))))
    want_w = relation(m.a.weight, shape=(4, 4))
    return h @ want_w.T + 2 * m.c.parametrizations.bias.original


@pytest.mark.parametrize("order", ["tie first", "parametrize first"])
@pytest.mark.parametrize("relation", [SAME, ROTATED])
def test_remove_parametrizations_on_another_tensor_of_a_tied_module_keeps_the_tie(relation, order):
    # stop 33: tie first, remove_parametrizations recursed in tying's register_parameter
    # (RecursionError, the bias gone from the module); parametrize first, it raised
    # AttributeError after setting the bias to its parametrized value, still parametrized
    m = _with_parametrized_bias(relation, order)
    x = _x(m)
    out = m(x)
    torch.testing.assert_close(out, _reference(m, relation, x))
    bias = 2 * m.c.parametrizations.bias.original.detach()
    parametrize.remove_parametrizations(m.c, "bias")
    assert not parametrize.is_parametrized(m.c) and type(m.c).__name__ == "TiedLinear"
    assert torch.equal(m.c.bias, bias) and isinstance(m.c.bias, nn.Parameter)
    assert torch.equal(m(x), out) and tying.verify(m) == 1
    assert torch.equal(m.c.weight, relation(m.a.weight, shape=(4, 4)))
    m(x).sum().backward()
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    assert torch.equal(m.c.weight, relation(m.a.weight, shape=(4, 4)))


@pytest.mark.parametrize("order", ["tie first", "parametrize first"])
@pytest.mark.parametrize("relation", [SAME, ROTATED])
def test_untie_and_retie_of_a_module_parametrized_elsewhere_keep_its_parametrization(
    relation, order
):
    # stop 33: tie first, untie returned 1 and left c raising KeyError('_tying_slots') at
    # every attribute access; parametrize first, untie kept the parametrization but a later
    # remove_parametrizations failed (tying's class sat above parametrize's)
    m = _with_parametrized_bias(relation, order)
    x = _x(m)
    out = m(x)
    assert tying.untie(m) == 1
    assert type(m.c).__name__ == "ParametrizedLinear" and parametrize.is_parametrized(m.c, "bias")
    assert torch.equal(m(x), out) and m.c.weight is not m.a.weight
    tying.Plan([tying.share("c.weight", like="a.weight", relation=relation)]).apply(m)
    assert type(m.c).__mro__[1].__name__ == "TiedLinear" and parametrize.is_parametrized(m.c)
    assert torch.equal(m.c.weight, relation(m.a.weight, shape=(4, 4))) and tying.verify(m) == 1
    parametrize.remove_parametrizations(m.c, "bias")
    assert type(m.c).__name__ == "TiedLinear" and tying.verify(m) == 1


@pytest.mark.parametrize("order", ["tie first", "parametrize first"])
def test_an_lstm_with_tied_inputs_and_an_orthogonal_recurrence_unties_and_unparametrizes(order):
    torch.manual_seed(0)
    m = nn.ModuleDict({"l1": nn.LSTM(3, 4), "l2": nn.LSTM(3, 4)})
    plan = tying.Plan([tying.share("l2.weight_ih_l0", like="l1.weight_ih_l0")])
    if order == "tie first":
        plan.apply(m)
    PZ.orthogonal(m["l2"], "weight_hh_l0")
    if order == "parametrize first":
        plan.apply(m)
    x = torch.randn(5, 2, 3)
    out = m["l2"](x)[0]
    assert m["l2"].weight_ih_l0 is m["l1"].weight_ih_l0 and tying.verify(m) == 1
    w_hh = m["l2"].weight_hh_l0.detach().clone()
    parametrize.remove_parametrizations(m["l2"], "weight_hh_l0")
    assert torch.equal(m["l2"].weight_hh_l0, w_hh) and tying.verify(m) == 1
    torch.testing.assert_close(m["l2"](x)[0], out)
    tying.untie(m)
    assert type(m["l2"]) is nn.LSTM and m["l2"].weight_ih_l0 is not m["l1"].weight_ih_l0
    torch.testing.assert_close(m["l2"](x)[0], out)


def test_pruning_a_relation_tied_slot_names_the_fix_that_works():
    """Stop 35: the message sent users to ``pruning.prune`` on the tied slot itself, which
    refuses a relation tie too; it now names the source, which prunes every use."""
    from tying.interop import pruning

    m = nn.ModuleDict({"enc": nn.Linear(4, 3), "dec": nn.Linear(3, 4)})
    rule = tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())
    tying.Plan([rule]).apply(m)
    before = state_bytes(m)
    with pytest.raises(tying.TieError, match=r"prune the source instead .*'enc.weight'"):
        prune.l1_unstructured(m["dec"], "weight", amount=0.5)
    assert state_bytes(m) == before
    pruning.prune(m, "enc.weight", prune.l1_unstructured, amount=0.5)  # the fix it names
    assert torch.equal(m["dec"].weight, m["enc"].weight.T)
    assert int((m["dec"].weight == 0).sum()) == 6
