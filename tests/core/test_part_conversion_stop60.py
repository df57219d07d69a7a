"""Stop 60: ``.half()`` / ``.double()`` / ``.to(dtype)`` on a part of a tied model whose
tie's source lies outside it converted the part's own tensors and left the slot reading its
source in the old dtype. The model was left half converted and the next forward failed inside
torch ("self and mat2 must have the same dtype, but got Double and Float"), naming no tie; a
tied ``nn.Embedding`` (no other parameter) went on computing in float32 after ``.half()``,
with no error. By hand the shared weight (and every use) would be converted. Such a
conversion is now refused before anything changes, naming the slot and the fixes; a part
that holds the source, the whole model and conversions that change nothing go through.
"""

import pytest
import torch
from torch import nn

import tying


def _model():
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "embed": nn.Embedding(5, 4),
            "head": nn.Linear(4, 5),
            "body": nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)),
        }
    )
    tying.Plan(
        [
            tying.share("head.weight", like="embed.weight"),
            tying.share("body.1.weight", like="body.0.weight"),
        ]
    ).apply(model)
    return model


def _dtypes(model):
    return {k: v.dtype for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "convert", [lambda m: m.double(), lambda m: m.half(), lambda m: m.to(torch.bfloat16)]
)
def test_converting_the_tied_module_alone_is_refused_and_changes_nothing(convert):
    model = _model()
    before = _dtypes(model)
    with pytest.raises(
        tying.TieError,
        match=r"of TiedLinear would leave the tied slot head\.weight \(served from embed\.weight"
        r".*in torch\.float32.*nothing was converted",
    ):
        convert(model.head)
    assert _dtypes(model) == before and model.head.weight is model.embed.weight


def test_the_fixes_work_when_followed():
    model = _model()
    model.double()  # the model that holds the source
    x = torch.randn(2, 4, dtype=torch.float64)
    assert model.head(x).dtype == torch.float64 and tying.verify(model) == 2
    model = _model()
    with pytest.raises(tying.TieError) as err:
        model.head.double()
    fix = "tying.Plan([tying.free('head.weight')]).apply(model)"
    assert fix in str(err.value)
    eval(fix, {"tying": tying, "model": model})
    model.head.double()
    assert model.head(x).dtype == torch.float64 and model.embed.weight.dtype == torch.float32


def test_a_tied_embedding_no_longer_stays_float32_silently():
    model = nn.ModuleDict({"lin": nn.Linear(4, 5), "emb": nn.Embedding(5, 4)})
    tying.Plan([tying.share("emb.weight", like="lin.weight")]).apply(model)
    with pytest.raises(tying.TieError, match=r"half\(\) of TiedEmbedding .*emb\.weight"):
        model.emb.half()  # before stop 60: no error, and model.emb(ids) stayed float32
    assert model.emb(torch.tensor([1, 2])).dtype == torch.float32


def test_what_changes_nothing_or_holds_the_source_goes_through():
    model = _model()
    model.head.float()  # already float32
    model.head.to(torch.float32)
    model.head.share_memory()
    model.body.double()  # the part holds body.1's source
    assert (
        model.body[1].weight.dtype == torch.float64 and model.body[1].weight is model.body[0].weight
    )
    outer = nn.ModuleDict({"net": _model()})  # converted from above the plan's root
    outer.half()
    assert outer.net.head.weight.dtype == torch.float16 and tying.verify(outer.net) == 2


def test_a_part_above_names_the_modules_it_converted_first():
    model = nn.ModuleDict(
        {"embed": nn.Embedding(5, 4), "dec": nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 5))}
    )
    tying.Plan([tying.share("dec.1.weight", like="embed.weight")]).apply(model)
    with pytest.raises(
        tying.TieError,
        match=r"double\(\) of Sequential would leave the tied slot dec\.1\.weight.*the modules "
        r"of the Sequential before this TiedLinear were already converted",
    ):
        model.dec.double()
    model.double()  # the advice: the whole model again
    assert {p.dtype for p in model.parameters()} == {torch.float64} and tying.verify(model) == 1


def test_a_part_materialised_before_its_meta_source_goes_through():
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tying.Plan([tying.share("1.weight", like="0.weight")]).apply(net)
    net[1].to_empty(device="cpu", recurse=False)  # module by module, as FSDP's meta init
    net[0].to_empty(device="cpu", recurse=False)
    assert net[1].weight is net[0].weight and not net[1].bias.is_meta


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_a_container_deeper_than_the_tied_path_that_lacks_the_source_is_refused(levels):
    # review of stop 60: head's path is one segment deep, and a container two or more levels
    # above it (a pipeline stage nn.Sequential(nn.Sequential(model.head))) was taken for a
    # container above the plan's root: the half() went through and the tied Embedding went on
    # computing in float32 (the Linear: bias float16, weight float32, forward failed in torch)
    model = nn.ModuleDict({"lin": nn.Linear(4, 5), "emb": nn.Embedding(5, 4)})
    tying.Plan([tying.share("emb.weight", like="lin.weight")]).apply(model)
    stage = model.emb
    for _ in range(levels):
        stage = nn.Sequential(stage)
    with pytest.raises(
        tying.TieError, match=r"half\(\) of Sequential would leave the tied slot emb"
    ):
        stage.half()
    assert model.emb(torch.tensor([1, 2])).dtype == torch.float32
    outer = nn.Sequential(nn.Sequential(model))  # a container above the whole model
    outer.half()
    assert model.emb(torch.tensor([1, 2])).dtype == torch.float16 and tying.verify(model) == 1


def test_a_callers_own_fn_used_twice_is_checked_again_after_the_part_changed():
    def to_half(t):
        return t.half() if t.is_floating_point() else t

    model = nn.ModuleDict({"e": nn.Embedding(5, 4), "part": nn.ModuleDict({"h": nn.Linear(4, 5)})})
    tying.Plan([tying.share("part.h.weight", like="e.weight")]).apply(model)
    model["part"]["e2"] = model["e"]  # the part holds the source: goes through
    model["part"]._apply(to_half)
    model["e"].float()  # the source's module is not tied: no check runs
    del model["part"]["e2"]
    with pytest.raises(tying.TieError, match=r"part\.h\.weight"):
        model["part"]._apply(to_half)
    assert model["part"]["h"].bias.dtype == torch.float16  # from the first call only
