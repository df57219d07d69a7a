"""``tying.save`` of a state a safetensors file cannot hold is refused by entry (stop 39).

A dynamically quantized model's state holds a ``torch.dtype`` (``_packed_params.dtype``):
save failed with ``AttributeError: 'torch.dtype' object has no attribute 'detach'``,
naming neither the entry nor the fix. Quantized and sparse tensors failed inside the
digest or safetensors. Each is now a ``TieError`` naming the entry, and the file that was
there is left as it was.
"""

from __future__ import annotations

import pathlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import tying

pytestmark = pytest.mark.filterwarnings(
    "ignore:torch.ao.quantization is deprecated:DeprecationWarning",
    "ignore:.*quantize_per_tensor",
)


def _bad(kind: str):
    if kind == "quantized":
        return torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.qint8)
    if kind == "sparse":
        return torch.eye(3).to_sparse()
    raise AssertionError(kind)


def test_a_dynamically_quantized_model_is_refused_naming_its_dtype_entry(tmp_path):
    torch.manual_seed(0)
    q = torch.ao.quantization.quantize_dynamic(
        nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), {nn.Linear}, torch.qint8
    )
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"the user's old file")
    with pytest.raises(tying.TieError, match=r"state entry '0\._packed_params\.dtype' is a dtype"):
        tying.save(q, path)
    assert path.read_bytes() == b"the user's old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp left


@pytest.mark.parametrize("kind", ["quantized", "sparse"])
def test_a_quantized_or_sparse_tensor_is_refused_by_name(tmp_path, kind):
    m = nn.Linear(3, 3)
    m.register_buffer("odd", _bad(kind))
    with pytest.raises(tying.TieError, match=rf"state entry 'odd' is a .*{kind[:5]}"):
        tying.save(m, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


@settings(derandomize=True, deadline=None, max_examples=12)
@given(
    n=st.integers(1, 4),
    where=st.integers(0, 3),
    kind=st.sampled_from(["none", "quantized", "sparse"]),
)
def test_property_save_writes_every_tensor_or_nothing(tmp_path_factory, n, where, kind):
    """With an unwritable entry anywhere, nothing is written; without one, the file loads
    back every tensor bit for bit, ties included."""
    folder = pathlib.Path(tmp_path_factory.mktemp("save"))
    torch.manual_seed(n)
    m = nn.Sequential(*(nn.Linear(3, 3) for _ in range(n)))
    if n > 1:
        tying.Plan([tying.share(f"{n - 1}.weight", like="0.weight")]).apply(m)
    if kind != "none":
        m[min(where, n - 1)].register_buffer("odd", _bad(kind))
    path = folder / "m.safetensors"
    if kind != "none":
        with pytest.raises(tying.TieError, match=rf"{min(where, n - 1)}\.odd"):
            tying.save(m, path)
        assert list(folder.iterdir()) == []
        return
    tying.save(m, path)
    fresh = nn.Sequential(*(nn.Linear(3, 3) for _ in range(n)))
    tying.load(fresh, path)
    for a, b in zip(m.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    if n > 1:
        assert fresh[n - 1].weight is fresh[0].weight
