"""Ties on a CUDA device: the same results as on the CPU, and the ties still hold.

Every test here needs CUDA and is skipped without it (CI has no GPU; these run on a
lent GPU machine; docs/core.md, "Writing into a tied slot", says what a GPU changes).
``TYING_TEST_DEVICE=cpu`` runs them on the CPU against itself, to check the tests' own
wiring on a machine without a GPU.
"""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import tying
from tests.test_distributed import LM, PLAN

_FORCED = os.environ.get("TYING_TEST_DEVICE")
DEV = _FORCED or ("cuda" if torch.cuda.is_available() else None)
pytestmark = pytest.mark.skipif(DEV is None, reason="needs a CUDA device")

# the CPU results are the reference: keep CUDA's matrix products in full float32
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


# the model and plan of the CPU distributed tests, at other sizes
def _model() -> nn.Module:
    return LM(vocab=32, d=16, n=3)


def _lm(device: str = "cpu") -> LM:
    torch.manual_seed(0)
    m = _model().to(device)
    PLAN.apply(m)
    return m


def _tokens(device: str = "cpu") -> torch.Tensor:
    return torch.randint(0, 32, (4, 7), generator=torch.Generator().manual_seed(1)).to(device)


def _train(m: nn.Module, x: torch.Tensor, steps: int = 3) -> None:
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()


def _assert_ties_hold(m: LM) -> None:
    tying.verify(m)
    assert m.head.weight is m.embed.weight
    assert m.layers[2][0].weight.data_ptr() == m.layers[0][0].weight.data_ptr()


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    a, b = a.detach().cpu(), b.detach().cpu()
    worst = float((a - b).abs().max()) / max(float(b.abs().max()), 1.0)
    assert worst <= tol, worst


def test_a_tied_model_moved_to_the_device_keeps_its_ties_and_trains_like_the_cpu():
    cpu, dev = _lm(), _lm().to(DEV)
    _assert_ties_hold(dev)
    assert dev.embed.weight.device.type == DEV
    assert tying.count(dev).physical == tying.count(cpu).physical
    _close(dev(_tokens(DEV)), cpu(_tokens()))
    _train(cpu, _tokens())
    _train(dev, _tokens(DEV))
    _assert_ties_hold(dev)
    for (name, a), (_, b) in zip(dev.state_dict().items(), cpu.state_dict().items(), strict=True):
        _close(a, b, 1e-4), name
    back = dev.cpu()
    _assert_ties_hold(back)


def test_a_plan_applied_on_the_device_puts_the_physical_tensors_there():
    m = _model().to(DEV)
    PLAN.apply(m)
    _assert_ties_hold(m)
    assert {p.device.type for p in m.parameters()} == {DEV}
    m(_tokens(DEV)).sum().backward()
    # the tied head adds its gradient into the embedding's one tensor
    assert m.embed.weight.grad is not None and m.embed.weight.grad.device.type == DEV


def test_relations_resolve_on_the_device_as_on_the_cpu():
    def build(device):
        torch.manual_seed(3)
        m = nn.ModuleDict({k: nn.Linear(6, 6, bias=False) for k in "abcde"}).to(device)
        tying.Plan(
            [
                tying.share("b.weight", like="a.weight", relation=tying.Transposed()),
                tying.share("c.weight", like="a.weight", relation=tying.Scaled(0.5)),
                tying.share("d.weight", like="a.weight", relation=tying.Flipped(dims=(1,))),
                tying.share("e.weight", like="a.weight", relation=tying.Rotated(k=1)),
            ]
        ).apply(m)
        return m

    cpu, dev = build("cpu"), build(DEV)
    x = torch.randn(5, 6)
    for k in "abcde":
        assert dev[k].weight.device.type == DEV
        _close(dev[k].weight, cpu[k].weight, 0.0)
        _close(dev[k](x.to(DEV)), cpu[k](x))
    assert tying.count(dev).physical == tying.count(cpu).physical < 6 * 36


def test_a_checkpoint_saved_from_the_device_loads_on_the_cpu_and_back(tmp_path):
    dev = _lm(DEV)
    _train(dev, _tokens(DEV))
    tying.save(dev, tmp_path / "m.safetensors")
    cpu = _model()  # untied: the file's plan ties it
    tying.load(cpu, tmp_path / "m.safetensors")
    _assert_ties_hold(cpu)
    for k, v in dev.state_dict().items():
        assert torch.equal(cpu.state_dict()[k], v.cpu()), k
    again = _model().to(DEV)
    tying.load(again, tmp_path / "m.safetensors")
    _assert_ties_hold(again)
    assert again.embed.weight.device.type == DEV
    assert torch.equal(again(_tokens(DEV)), dev(_tokens(DEV)))


def test_bf16_autocast_trains_the_one_tensor():
    m = _lm(DEV)
    kind = "cuda" if DEV == "cuda" else "cpu"
    before = m.embed.weight.detach().clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with torch.autocast(kind, dtype=torch.bfloat16):
        loss = m(_tokens(DEV)).float().pow(2).mean()
    loss.backward()
    assert m.embed.weight.grad.dtype == torch.float32
    opt.step()
    _assert_ties_hold(m)
    assert not torch.equal(m.embed.weight, before)
    assert m.head.weight.dtype == torch.float32


def test_group_conv_on_the_device_matches_the_cpu_and_stays_equivariant():
    from tying.nn import GroupConv2d

    torch.manual_seed(0)
    cpu = GroupConv2d(4, 4, 3, group="C4")
    dev = copy.deepcopy(cpu).to(DEV)
    x = torch.randn(2, 4, 4, 12, 12)  # (B, C, |G|, H, W)
    _close(dev(x.to(DEV)), cpu(x))
    # rotating the image and cycling the orientations commutes with the layer
    y = dev(x.to(DEV))
    xr = torch.rot90(x, 1, dims=(-2, -1)).roll(1, dims=2).to(DEV)
    yr = torch.rot90(y, 1, dims=(-2, -1)).roll(1, dims=2)
    _close(dev(xr), yr)
    # an optimizer step moves the one kernel; the eval cache must not serve the old bank
    dev.eval()
    with torch.no_grad():
        first = dev(x.to(DEV))
    dev.train()
    opt = torch.optim.SGD(dev.parameters(), lr=0.5)
    dev(x.to(DEV)).pow(2).mean().backward()
    opt.step()
    dev.eval()
    with torch.no_grad():
        second = dev(x.to(DEV))
    fresh = copy.deepcopy(dev).cpu()
    with torch.no_grad():
        _close(second, fresh(x))
    assert not torch.allclose(first, second)


@pytest.mark.filterwarnings("ignore:`torch.jit.script.*` is deprecated:DeprecationWarning")
def test_group_conv_compiled_on_the_device_matches_eager():
    from tying.nn import GroupConv2d

    torch.manual_seed(0)
    layer = GroupConv2d(4, 4, 3, group="C4").to(DEV)
    x = torch.randn(2, 4, 4, 12, 12, device=DEV)
    eager = layer(x)
    compiled = torch.compile(layer)
    _close(compiled(x), eager)
    compiled(x).sum().backward()
    g_compiled = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    eager.sum().backward()
    for a, b in zip(g_compiled, [p.grad for p in layer.parameters()], strict=True):
        _close(a, b, 1e-4)


def test_hashed_linear_on_the_device_matches_the_cpu():
    from tying.nn import HashedLinear

    torch.manual_seed(0)
    cpu = HashedLinear(40, 30, buckets=100)
    dev = copy.deepcopy(cpu).to(DEV)
    x = torch.randn(8, 40)
    _close(dev(x.to(DEV)), cpu(x))
    dev(x.to(DEV)).sum().backward()
    cpu(x).sum().backward()
    for a, b in zip(dev.parameters(), cpu.parameters(), strict=True):
        _close(a.grad, b.grad, 1e-4)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_private_gradients_on_the_device_match_the_cpu(mode):
    from tying.train import private_grad

    def build(device):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Embedding(20, 8), nn.Flatten(), nn.Linear(24, 20)).to(device)
        return m

    def ce(out, y):
        return nn.functional.cross_entropy(out, y, reduction="none")

    x = torch.randint(0, 20, (6, 3))
    y = torch.randint(0, 20, (6,))
    got = {}
    for device in ("cpu", DEV):
        m = build(device)
        pg = private_grad(
            m, ce, x.to(device), y.to(device), max_grad_norm=0.5, noise_multiplier=0.0, mode=mode
        )
        got[device] = pg.grads
    for k, v in got["cpu"].items():
        _close(got[DEV][k], v, 1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, kind: str, port: int, out: str) -> None:
    import torch.distributed as dist

    import tying.distributed as td

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "nccl" if DEV == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=1)
    if DEV == "cuda":
        torch.cuda.set_device(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    m = _lm(DEV)
    model = td.ddp(m) if kind == "ddp" else td.fully_shard(m, units=["layers.*"])
    _train(model, _tokens(DEV))
    td.save(model, os.path.join(out, f"{kind}.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_distributed_wrappers_on_the_device_keep_the_ties(kind, tmp_path):
    mp.start_processes(
        _ddp_worker, args=(kind, _free_port(), str(tmp_path)), nprocs=1, start_method="spawn"
    )
    ref = _lm()
    _train(ref, _tokens())
    fresh = _model()
    tying.load(fresh, tmp_path / f"{kind}.safetensors")
    _assert_ties_hold(fresh)
    for k, v in ref.state_dict().items():
        _close(fresh.state_dict()[k], v, 1e-4)


def test_hf_model_on_the_device_round_trips_with_its_ties(tmp_path):
    transformers = pytest.importorskip("transformers")
    import tying.hf

    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=64, n_positions=16,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).to(DEV).eval()
    tying.Plan(
        [
            tying.share("transformer.h.*", like="transformer.h.0"),
            tying.share("lm_head.weight", like="transformer.wte.weight"),
        ]
    ).apply(model)
    x = torch.arange(8, device=DEV)[None]
    folder = tying.hf.save_pretrained(model, tmp_path / "m")
    again = tying.hf.from_pretrained(transformers.GPT2LMHeadModel, folder).to(DEV).eval()
    assert again.lm_head.weight is again.transformer.wte.weight
    assert tying.count(again).physical == tying.count(model).physical
    with torch.no_grad():
        _close(again(x).logits, model(x).logits, 1e-6)


@pytest.mark.parametrize(
    "cls, kw",
    [
        ("HashedEmbedding", {"mode": "entry"}),
        ("HashedEmbedding", {"mode": "block", "block": 4}),
        ("HashedEmbeddingBag", {"mode": "block", "block": 4, "pooling": "sum"}),
    ],
)
def test_hashed_embeddings_on_the_device_match_the_cpu(cls, kw):
    import tying.nn

    torch.manual_seed(0)
    cpu = getattr(tying.nn, cls)(5000, 8, 256, **kw)
    dev = copy.deepcopy(cpu).to(DEV)
    ids = torch.randint(0, 5000, (4, 6))
    _close(dev(ids.to(DEV)), cpu(ids))
    dev(ids.to(DEV)).pow(2).sum().backward()
    cpu(ids).pow(2).sum().backward()
    for a, b in zip(dev.parameters(), cpu.parameters(), strict=True):
        _close(a.grad, b.grad, 1e-4)


def test_winograd_group_conv_on_the_device_is_refused_with_the_fix():
    from tying.nn import GroupConv2d

    if DEV == "cpu":
        pytest.skip("the refusal is for a non-CPU device")
    layer = GroupConv2d(4, 4, 3, group="C4", algorithm="winograd").to(DEV)
    with pytest.raises(ValueError, match="runs on the CPU only"):
        layer(torch.randn(1, 4, 4, 8, 8, device=DEV))


def test_dpsgd_steps_on_the_device_match_the_cpu():
    from tying.train import DPSGD

    def loss(out, y):  # (B, T, V), (B, T) -> (B,)
        ce = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none")
        return ce.view(y.shape).mean(1)

    x, y = _tokens(), _tokens().roll(1, dims=1)
    got = {}
    for device in ("cpu", DEV):
        m = _lm(device)
        dp = DPSGD(
            m, torch.optim.SGD(m.parameters(), lr=0.1), noise_multiplier=0.0,
            max_grad_norm=0.5, sample_rate=0.1,
        )  # fmt: skip
        for _ in range(2):
            dp.step(loss, x.to(device), y.to(device))
        _assert_ties_hold(m)
        got[device] = {k: v.detach().cpu() for k, v in m.state_dict().items()}
    for k, v in got["cpu"].items():
        _close(got[DEV][k], v, 1e-4)


@pytest.mark.parametrize("mode", ["vmap", "ghost"])
def test_a_forward_that_mixes_examples_is_refused_on_the_device(mode):
    from tying.train import private_grad

    class Center(nn.Module):
        def forward(self, h):
            return h - h.mean(0)

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), Center(), nn.Dropout(0.1), nn.Linear(4, 2)).to(DEV)
    x, y = torch.randn(6, 3, device=DEV), torch.randint(0, 2, (6,), device=DEV)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.cuda.get_rng_state() if DEV == "cuda" else torch.get_rng_state()
    with pytest.raises(ValueError, match="mixes examples"):
        private_grad(
            m, lambda o, t: nn.functional.cross_entropy(o, t, reduction="none"), x, y,
            max_grad_norm=1.0, noise_multiplier=0.0, mode=mode,
        )  # fmt: skip
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())
    now = torch.cuda.get_rng_state() if DEV == "cuda" else torch.get_rng_state()
    assert torch.equal(now, rng)  # the probe's forwards leave the caller's random state
