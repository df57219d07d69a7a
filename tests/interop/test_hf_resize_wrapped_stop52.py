"""Stop 52: ``tying.hf.resize_token_embeddings`` of a wrapped model is refused before any change.

Under ``td.ddp`` the call resized and returned: an HF-tied GPT-2 got (72, 16) embeddings in
place, a Plan-tied one (ties between layers, head untied) a new ``lm_head.weight``
Parameter, and the wrapped model was refused at its next training forward ("parameters
changed after it was wrapped"), the resize kept: the model could neither train as it was
nor as it now is. Under ``td.fully_shard`` the call failed inside HF with ``aten.copy_.default
got mixed torch.Tensor and DTensor``, naming neither the wrapper nor the fix. Both are
refused now before anything changes (every tensor, every Parameter object and the config
compared), naming the wrapper and the fix; the fix (resize before wrapping) then trains as
plain torch DDP on the resized model.
"""

from __future__ import annotations

import gc

import pytest
import torch
from torch.nn.parallel import DistributedDataParallel

import tying
import tying.distributed as td
import tying.hf

transformers = pytest.importorskip("transformers")

pytestmark = [
    pytest.mark.filterwarnings("ignore:It seems like you did not set/select the default"),
    pytest.mark.filterwarnings("ignore:FSDP2-wrapped module"),
]
X = torch.arange(8).reshape(1, 8)
DDP = (
    r"resize_token_embeddings: the model{at} is wrapped by td\.ddp \(DistributedDataParallel\)"
    r".*resize before wrapping: drop the wrapper \(inner = wrapped\.module; del wrapped\), call "
    r"tying\.hf\.resize_token_embeddings\(inner, n\), then td\.ddp\(inner\) again.*nothing was "
    r"changed"
)
FSDP = (
    r"resize_token_embeddings: the model is sharded by FSDP2 \(td\.fully_shard\), which holds "
    r"each parameter as a shard \(a DTensor\).*resize before sharding: build the model again.*"
    r"nothing was changed"
)


def gpt2(tie: bool, plan: bool = False):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=64, n_positions=16,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=tie,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # steps compared with an anchor
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(cfg)
    if plan:  # a Plan tie away from the embeddings: HF's resize alone changes them
        tying.Plan(
            [tying.share("transformer.h.1.mlp.c_fc.weight", like="transformer.h.0.mlp.c_fc.weight")]
        ).apply(model)
    return model


def snapshot(model) -> tuple:
    values = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    objects = dict(model.named_parameters(remove_duplicate=False))
    return values, objects, model.config.vocab_size


def assert_unchanged(model, before: tuple) -> None:
    values, objects, vocab = before
    now = model.state_dict(keep_vars=True)
    assert set(now) == set(values)
    for name, value in values.items():
        assert now[name].shape == value.shape, name
        assert torch.equal(now[name].detach(), value), name
    assert dict(model.named_parameters(remove_duplicate=False)) == objects
    assert model.config.vocab_size == vocab


@pytest.mark.parametrize("tie,plan", [(True, False), (False, True)], ids=["hf-tied", "plan-tied"])
def test_resize_under_ddp_is_refused_before_any_change(group, tie, plan):
    model = gpt2(tie, plan)
    wrapped = td.ddp(model)
    before = snapshot(model)
    with pytest.raises(tying.TieError, match=DDP.format(at="")):
        tying.hf.resize_token_embeddings(model, 72, mean_resizing=False)
    assert_unchanged(model, before)
    wrapped(X).logits.sum().backward()  # still trains as it was wrapped


def test_resize_of_the_ddp_wrapper_itself_is_refused_naming_it(group):
    wrapped = td.ddp(gpt2(True))
    before = snapshot(wrapped.module)
    with pytest.raises(
        tying.TieError,
        match=r"the model is a DistributedDataParallel wrapper.*drop the wrapper \(inner = "
        r"wrapped\.module; del wrapped\).*nothing was changed",
    ):
        tying.hf.resize_token_embeddings(wrapped, 72, mean_resizing=False)
    assert_unchanged(wrapped.module, before)


def test_resize_of_a_model_inside_a_wrapped_one_is_refused(group):
    outer = torch.nn.ModuleDict({"lm": gpt2(True), "extra": torch.nn.Linear(2, 2)})
    wrapped = td.ddp(outer)
    before = snapshot(outer["lm"])
    with pytest.raises(tying.TieError, match=DDP.format(at="")):
        tying.hf.resize_token_embeddings(outer["lm"], 72, mean_resizing=False)
    assert_unchanged(outer["lm"], before)
    del wrapped


@pytest.mark.parametrize(
    "tie,plan,shard",
    [(True, False, "td"), (False, True, "td"), (True, False, "torch")],
    ids=["hf-tied", "plan-tied", "torch-fully_shard"],
)
def test_resize_under_fully_shard_names_the_wrapper(group, tie, plan, shard):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = gpt2(tie, plan)
    (td.fully_shard if shard == "td" else fully_shard)(model, mesh=init_device_mesh("cpu", (1,)))
    before = snapshot(model)
    with pytest.raises(tying.TieError, match=FSDP):
        tying.hf.resize_token_embeddings(model, 72, mean_resizing=False)
    assert_unchanged(model, before)


def test_the_fix_resize_then_wrap_again_trains_as_plain_ddp(group):
    """Drop the wrapper, resize, wrap again: one step matches plain DDP of the same model
    resized by HF itself (its own tie_word_embeddings tie, made by hand by HF)."""
    model = gpt2(True)
    wrapped = td.ddp(model)
    with pytest.raises(tying.TieError):
        tying.hf.resize_token_embeddings(model, 72, mean_resizing=False)
    del wrapped
    gc.collect()
    tying.hf.resize_token_embeddings(model, 72, mean_resizing=False)
    again = td.ddp(model)
    reference = gpt2(True)
    reference.resize_token_embeddings(72, mean_resizing=False)
    with torch.no_grad():  # HF's new rows are random: give the anchor the same ones
        reference.transformer.wte.weight.copy_(model.transformer.wte.weight)
    plain = DistributedDataParallel(reference)
    for net in (again, plain):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        net(torch.tensor([[70, 3, 71, 5]])).logits.pow(2).mean().backward()
        opt.step()
    assert model.lm_head.weight is model.transformer.wte.weight
    got, ref = dict(model.named_parameters()), dict(reference.named_parameters())
    assert set(got) == set(ref)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-6, atol=1e-7)
