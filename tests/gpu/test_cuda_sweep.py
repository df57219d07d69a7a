"""Every public layer and every relation on a CUDA device: the CPU's numbers, the same ties.

``test_cuda.py`` checks chosen models; this file sweeps the kinds, so that a layer or a
relation added later is checked on the device too: the layers are those of
``tests/nn/test_numpy_sizes_stop41.py`` (whose guard fails when a public layer with a
size is missing there), the relations every one ``tying`` exports. Skipped without
CUDA; ``TYING_TEST_DEVICE=cpu`` runs them on the CPU against itself (the wiring only).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

import tying
from tests.nn.test_numpy_sizes_stop41 import LAYERS

_FORCED = os.environ.get("TYING_TEST_DEVICE")
DEV = _FORCED or ("cuda" if torch.cuda.is_available() else None)
pytestmark = pytest.mark.skipif(DEV is None, reason="needs a CUDA device")

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def _to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, tuple | list):
        return type(x)(_to(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def _inputs_to(model: nn.Module, device: str) -> None:
    """Move every tensor argument of every submodule's forward to ``device`` (the sweep's
    calls build their inputs on the CPU)."""

    def hook(_, args, kwargs):
        return _to(args, device), _to(kwargs, device)

    for sub in model.modules():
        sub.register_forward_pre_hook(hook, with_kwargs=True)


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, tuple | list):
        return [t for v in out for t in _tensors(v)]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    return []


def _storage_groups(model: nn.Module) -> list[list[str]]:
    """Names of the parameters and buffers, grouped by the storage they read."""
    groups: dict[int, list[str]] = {}
    items = list(model.named_parameters(remove_duplicate=False))
    items += list(model.named_buffers(remove_duplicate=False))
    for name, t in items:
        if t.numel():
            groups.setdefault(t.untyped_storage().data_ptr(), []).append(name)
    return sorted(sorted(g) for g in groups.values())


def _close(a: torch.Tensor, b: torch.Tensor, what: str, tol: float = 1e-4) -> None:
    a, b = a.detach().cpu(), b.detach().cpu()
    assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape, a.dtype, b.dtype)
    if a.is_sparse:
        a, b = a.to_dense(), b.to_dense()
    if not a.is_floating_point():
        assert torch.equal(a, b), what
        return
    assert bool(torch.isfinite(a).all()) == bool(torch.isfinite(b).all()), what
    worst = float((a - b).abs().max()) / max(float(b.abs().max()), 1.0) if a.numel() else 0.0
    assert worst <= tol, f"{what}: {worst:.2e} relative"


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_public_layer_on_the_device_matches_the_cpu(name):
    build, call = LAYERS[name]
    torch.manual_seed(0)
    cpu = build(int)
    dev = copy.deepcopy(cpu).to(DEV)
    _inputs_to(dev, DEV)
    assert {t.device.type for t in dev.parameters()} <= {DEV}, name
    # the ties survive the move: the same storages shared, the same physical count
    assert _storage_groups(dev) == _storage_groups(cpu), name
    assert tying.count(dev).physical == tying.count(cpu).physical, name
    tying.verify(dev)
    out_cpu, out_dev = _tensors(call(cpu)), _tensors(call(dev))
    assert len(out_cpu) == len(out_dev) > 0, name
    for i, (a, b) in enumerate(zip(out_dev, out_cpu, strict=True)):
        assert a.device.type == DEV, f"{name} output {i} on {a.device}"
        _close(a, b, f"{name} output {i}")
    floats = [t for t in out_cpu if t.is_floating_point() and t.requires_grad]
    if not floats:
        return
    loss = sum(t.pow(2).sum() for t in floats)
    loss.backward()
    sum(t.pow(2).sum() for t in out_dev if t.is_floating_point() and t.requires_grad).backward()
    grads_cpu = {n: p.grad for n, p in cpu.named_parameters()}
    for n, p in dev.named_parameters():
        assert (p.grad is None) == (grads_cpu[n] is None), f"{name}: {n} gradient"
        if p.grad is not None:
            _close(p.grad, grads_cpu[n], f"{name}: {n} gradient")
    tying.verify(dev)


RELATIONS = {
    "Same": (tying.Same(), (5, 6), (5, 6)),
    "Transposed": (tying.Transposed(), (5, 6), (6, 5)),
    "Scaled": (tying.Scaled(0.5), (5, 6), (5, 6)),
    "Flipped": (tying.Flipped(dims=(0, 1)), (5, 6), (5, 6)),
    "Mirrored": (tying.Mirrored(), (5, 3), (5, 6)),
    "Rotated": (tying.Rotated(k=1), (6, 6), (6, 6)),
    "Hashed": (tying.Hashed(8, seed=3), (8,), (5, 6)),
}


def _related(device: str, relation, source, target) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Module()
    m.s, m.t = nn.Module(), nn.Module()
    m.s.w = nn.Parameter(torch.randn(source))
    m.t.w = nn.Parameter(torch.randn(target))
    m.to(device)
    tying.Plan([tying.share("t.w", like="s.w", relation=copy.deepcopy(relation))]).apply(m)
    return m


def test_every_exported_relation_is_swept():
    exported = {
        n
        for n in tying.__all__
        if isinstance(getattr(tying, n), type)
        and issubclass(getattr(tying, n), tying.Relation)
        and getattr(tying, n) is not tying.Relation
    }
    assert exported == set(RELATIONS), sorted(exported ^ set(RELATIONS))


@pytest.mark.parametrize("name", sorted(RELATIONS))
def test_every_relation_on_the_device_reads_trains_and_saves_as_on_the_cpu(name, tmp_path):
    relation, source, target = RELATIONS[name]
    cpu, dev = _related("cpu", relation, source, target), _related(DEV, relation, source, target)
    assert dev.t.w.device.type == DEV and dev.s.w.device.type == DEV
    _close(dev.t.w, cpu.t.w, f"{name}: read", 0.0)
    assert tying.count(dev).physical == tying.count(cpu).physical
    for m in (cpu, dev):
        (m.t.w.pow(3).sum() + m.s.w.sum()).backward()
    for n, p in dev.named_parameters():
        _close(p.grad, dict(cpu.named_parameters())[n].grad, f"{name}: {n} gradient")
    for m in (cpu, dev):
        with torch.no_grad():
            for p in m.parameters():
                p -= 0.1 * p.grad
    tying.verify(dev)
    _close(dev.t.w, cpu.t.w, f"{name}: read after a step")
    # saved from the device, loaded on the CPU: the same numbers and the same tie
    tying.save(dev, tmp_path / "m.safetensors")
    back = _related("cpu", relation, source, target)
    tying.load(back, tmp_path / "m.safetensors")
    tying.verify(back)
    for (n, a), (_, b) in zip(back.state_dict().items(), dev.state_dict().items(), strict=True):
        assert torch.equal(a, b.cpu()), f"{name}: {n} after the round trip"
    _close(back.t.w, dev.t.w, f"{name}: read after the round trip", 0.0)
