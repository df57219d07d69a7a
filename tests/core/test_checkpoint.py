"""save/load: ties re-created from the file, atomic writes, integrity checks, no pickle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors import safe_open

import tying

from .helpers import AE, Stack, state_bytes

PLAN = tying.Plan(
    [
        tying.share("layers.*", like="layers.0"),
        tying.free("layers.*.norm"),
        tying.share("lm_head.weight", like="embed.weight", relation=tying.Scaled(0.5)),
    ]
)


def _saved(tmp_path):
    torch.manual_seed(0)
    m = Stack()
    PLAN.apply(m)
    path = tmp_path / "m.safetensors"
    tying.save(m, path)
    return m, path


def test_round_trip_into_a_fresh_untied_model(tmp_path):
    m, path = _saved(tmp_path)
    torch.manual_seed(1)
    fresh = Stack()
    plan = tying.load(fresh, path)
    x = torch.randint(0, 11, (2, 5))
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)
    assert len(plan.rules) == len(tying.ties(m))
    assert fresh.layers[2]["fc"].weight is fresh.layers[0]["fc"].weight
    with torch.no_grad():
        fresh.embed.weight.mul_(3.0)  # mutating the physical tensor changes every use
    torch.testing.assert_close(
        fresh.lm_head.weight, fresh.lm_head.weight_scale * fresh.embed.weight
    )
    tying.verify(fresh)


def test_file_holds_each_physical_tensor_once_and_no_pickle(tmp_path):
    m, path = _saved(tmp_path)
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert keys == set(m.state_dict())
    assert "lm_head.weight" not in keys and "layers.1.fc.weight" not in keys
    stored = sum(torch.Size(s).numel() for s in [f_shape(path, k) for k in keys])
    assert stored == tying.count(m).physical + sum(b.numel() for b in m.buffers())
    assert len(json.loads(meta["tying.ties"])) == len(tying.ties(m))
    assert b"pickle" not in path.read_bytes()[:200] and path.read_bytes()[8:9] == b"{"


def f_shape(path, key):
    with safe_open(str(path), "pt") as f:
        return f.get_slice(key).get_shape()


def test_load_into_the_same_tied_model_is_a_plain_value_load(tmp_path):
    m, path = _saved(tmp_path)
    other = Stack()
    PLAN.apply(other)
    tying.load(other, path)
    assert state_bytes(other) == state_bytes(m)


def test_mismatched_file_raises_and_changes_nothing(tmp_path):
    _, path = _saved(tmp_path)
    wrong = Stack(d=6)
    snap = state_bytes(wrong)
    with pytest.raises(
        tying.TieError,
        match=r"does not fit this model .*shape/dtype mismatch: embed.weight: file \(11, 8\)",
    ):
        tying.load(wrong, path)
    assert state_bytes(wrong) == snap and tying.ties(wrong) == []


def test_ties_that_do_not_fit_raise_and_change_nothing(tmp_path):
    m = AE()
    tying.Plan([tying.share("dec.weight", like="enc.weight", relation=tying.Transposed())]).apply(m)
    path = tmp_path / "ae.safetensors"
    tying.save(m, path)
    other = Stack()
    snap = state_bytes(other)
    with pytest.raises(tying.TieError, match="the ties in .* do not fit this model"):
        tying.load(other, path)
    assert state_bytes(other) == snap


def test_dtype_mismatch_is_not_coerced(tmp_path):
    _, path = _saved(tmp_path)
    m = Stack().to(torch.float64)
    with pytest.raises(
        tying.TieError,
        match=r"embed.weight: file \(11, 8\) torch.float32, model \(11, 8\) torch.float64",
    ):
        tying.load(m, path)


def test_truncated_file_is_detected(tmp_path):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(tying.TieError, match="is truncated or not a safetensors file"):
        tying.load(Stack(), path)


def test_tampered_file_fails_its_hash(tmp_path):
    _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    fresh = Stack()
    snap = state_bytes(fresh)
    with pytest.raises(tying.TieError, match="fails its SHA-256 check"):
        tying.load(fresh, path)
    assert state_bytes(fresh) == snap


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no file at"):
        tying.load(Stack(), "/nonexistent/x.safetensors")


def test_hand_tied_duplicates_are_written_once(tmp_path):
    m = Stack()
    m.lm_head.weight = m.embed.weight  # HuggingFace-style tie by hand
    path = tmp_path / "hand.safetensors"
    tying.save(m, path)
    with safe_open(str(path), "pt") as f:
        assert "lm_head.weight" not in f.keys()
    fresh = Stack()
    fresh.lm_head.weight = fresh.embed.weight
    tying.load(fresh, path)
    assert torch.equal(fresh.lm_head.weight, m.embed.weight)


def test_a_save_killed_mid_write_leaves_the_previous_file_readable(tmp_path):
    _, path = _saved(tmp_path)
    good = path.read_bytes()
    script = textwrap.dedent(
        f"""
        import os, sys, torch, tying, safetensors.torch as st
        real = st.save_file
        def slow(tensors, filename, metadata=None):
            real(tensors, filename, metadata=metadata)
            with open(filename, "r+b") as fh:      # half-written state on disk
                fh.truncate(os.path.getsize(filename) // 2)
            print("writing", flush=True)
            import time; time.sleep(60)
        st.save_file = slow
        big = torch.nn.Linear(512, 512)
        tying.save(big, {str(path)!r})
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(0.1)
    assert path.read_bytes() == good
    fresh = Stack()
    tying.load(fresh, path)
    tying.verify(fresh)


def test_metadata_must_be_strings(tmp_path):
    with pytest.raises(TypeError, match="metadata must map str to str"):
        tying.save(AE(), tmp_path / "x.safetensors", metadata={"epoch": 3})
