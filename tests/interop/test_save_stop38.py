"""Stop 38: ``tying.hf.save_pretrained`` called where HF itself writes nothing, or through a wrapper.

Two silent defects of the save path, found calling it as a distributed or compiled
training script does:

- on a process that does not save (``is_main_process=False``, or a rank other than 0),
  HF writes nothing; tying's old-shard cleanup then took every file in the folder for
  an earlier save's and removed them all: the main process's sharded checkpoint was gone;
- ``torch.compile(model)`` forwards ``save_pretrained`` and ``config``, but its state dict
  and paths start with ``_orig_mod.``: the file and the recorded plan were written under
  those names, so plain HF loading initialised every weight at random;
- a transformers-4 pickle checkpoint in the folder (``pytorch_model-0000x-of-0000y.bin``
  and its index) was removed as if it were an old shard of this save; HF keeps it.
"""

from __future__ import annotations

import hashlib
import pathlib
import tempfile
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import tying
from tests.interop import models as M

hf = pytest.importorskip("tying.hf")
T = M.transformers
X = torch.arange(10)[None]


def _compile(model):
    """``torch.compile(model)``; its first call imports dynamo, which warns about torch.jit."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
        return torch.compile(model)


def _digests(folder: pathlib.Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}


def _file_keys(folder: pathlib.Path) -> set[str]:
    keys: set[str] = set()
    for f in folder.glob("*.safetensors"):
        keys |= set(load_file(f))
    return keys


def _tied_gpt2(seed: int = 0):
    model = M.gpt2(seed=seed)
    M.GPT2_PLAN.apply(model)
    return model


def test_a_process_that_does_not_save_leaves_the_main_processs_shards_as_they_are(tmp_path):
    model = _tied_gpt2()
    hf.save_pretrained(model, tmp_path, max_shard_size="20KB")
    before = _digests(tmp_path)
    assert sum(n.endswith(".safetensors") for n in before) > 2  # a sharded save to lose
    # plain HF writes nothing and removes nothing here
    model.save_pretrained(tmp_path, is_main_process=False)
    assert _digests(tmp_path) == before
    hf.save_pretrained(_tied_gpt2(seed=1), tmp_path, is_main_process=False)
    assert _digests(tmp_path) == before  # was: every shard and the index removed
    again = hf.from_pretrained(T.GPT2LMHeadModel, tmp_path).eval()
    assert torch.equal(again(X).logits, model(X).logits)


def test_a_rank_other_than_0_leaves_the_folder_as_it_is(monkeypatch, tmp_path):
    model = _tied_gpt2()
    hf.save_pretrained(model, tmp_path, max_shard_size="20KB")
    before = _digests(tmp_path)
    other = _tied_gpt2(seed=1)
    # as on rank 1 of an initialised process group: HF's own decision, read by both
    monkeypatch.setattr(other, "should_save_on_this_rank", lambda is_main_process: False)
    hf.save_pretrained(other, tmp_path)
    assert _digests(tmp_path) == before
    plain = T.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert torch.equal(plain(X).logits, model(X).logits)


def test_a_compiled_model_is_saved_under_the_models_own_names(tmp_path):
    model = _tied_gpt2()
    compiled = _compile(model)
    folder = hf.save_pretrained(compiled, tmp_path / "tying")
    keys = _file_keys(folder)
    assert not [k for k in keys if k.startswith("_orig_mod.")]  # was: every key
    assert keys == _file_keys(hf.save_pretrained(model, tmp_path / "plain_model"))
    plain = T.GPT2LMHeadModel.from_pretrained(folder).eval()  # was: all weights random
    assert torch.equal(plain(X).logits, model(X).logits)
    again = hf.from_pretrained(T.GPT2LMHeadModel, folder).eval()  # was: TieError
    assert torch.equal(again(X).logits, model(X).logits)
    assert again.lm_head.weight is again.transformer.wte.weight
    assert tying.count(again).physical == tying.count(model).physical


def _legacy_bin_checkpoint(model, folder: pathlib.Path) -> None:
    """The sharded pickle checkpoint transformers 4 wrote (transformers 5 writes none)."""
    import json

    state = {k: v.clone() for k, v in model.state_dict().items()}
    keys = sorted(state)
    halves = {
        "pytorch_model-00001-of-00002.bin": keys[::2],
        "pytorch_model-00002-of-00002.bin": keys[1::2],
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in halves.items():
        torch.save({k: state[k] for k in part}, folder / name)
    weight_map = {k: name for name, part in halves.items() for k in part}
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


@pytest.mark.parametrize("shard", [None, "20KB"])
def test_a_legacy_pickle_checkpoint_in_the_folder_is_kept_as_hf_keeps_it(shard, tmp_path):
    old_model = M.gpt2(seed=3)  # an older model, kept only as .bin shards
    _legacy_bin_checkpoint(old_model, tmp_path)
    legacy = _digests(tmp_path)
    # plain HF keeps them (it removes only its own model-0000x shards)
    plain_dir = tmp_path.parent / "plain"
    _legacy_bin_checkpoint(old_model, plain_dir)
    M.gpt2().save_pretrained(plain_dir, **({"max_shard_size": shard} if shard else {}))
    assert {n: d for n, d in _digests(plain_dir).items() if n in legacy} == legacy
    model = _tied_gpt2()
    hf.save_pretrained(model, tmp_path, **({"max_shard_size": shard} if shard else {}))
    after = _digests(tmp_path)
    assert {n: after.get(n) for n in legacy} == legacy  # was: all three removed
    again = hf.from_pretrained(T.GPT2LMHeadModel, tmp_path).eval()  # reads the new save
    assert torch.equal(again(X).logits, model(X).logits)
    plain = T.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert torch.equal(plain(X).logits, model(X).logits)
    # and the old model is still there to load as it was
    old = T.GPT2LMHeadModel.from_pretrained(tmp_path, use_safetensors=False).eval()
    assert torch.equal(old(X).logits, old_model(X).logits)


@settings(
    derandomize=True,
    deadline=None,
    max_examples=6,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([None, "20KB", "60KB"]),  # shard size
            st.booleans(),  # this process saves (is_main_process)
            st.booleans(),  # through torch.compile's wrapper
        ),
        min_size=2,
        max_size=3,
    ),
    st.booleans(),  # the folder starts with a legacy pickle checkpoint
)
def test_any_sequence_of_saves_loads_as_the_last_saving_processs_model(saves, legacy):
    """After any sequence of saves into one folder, from processes that save or not, of the
    model or its compiled wrapper, the folder holds the last saved model: plain HF and
    tying.hf both load its logits exactly, under the model's own names. A process that
    does not save, and a save refused for a stale file, leave every byte as it was; a
    legacy pickle checkpoint in the folder is kept, as HF keeps it."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp) / "ckpt"
        kept = {}
        if legacy:
            _legacy_bin_checkpoint(M.gpt2(seed=9), folder)
            kept = _digests(folder)
        last = None
        for seed, (shard, main, compiled) in enumerate(saves):
            model = _tied_gpt2(seed=seed)
            kwargs = {"is_main_process": main}
            if shard is not None:
                kwargs["max_shard_size"] = shard
            before = _digests(folder) if folder.is_dir() else {}
            try:
                hf.save_pretrained(_compile(model) if compiled else model, folder, **kwargs)
            except FileExistsError as err:  # a single file beside new shards: refused as before
                assert main and "from an earlier save" in str(err)
                assert _digests(folder) == before
                continue
            if main:
                last = model
            else:
                assert (_digests(folder) if folder.is_dir() else {}) == before
        now = _digests(folder) if folder.is_dir() else {}
        assert {n: now.get(n) for n in kept} == kept  # another checkpoint's files stay
        if last is None:
            assert not any(folder.glob("*.safetensors"))  # nothing written, nothing made up
            return
        assert not [k for k in _file_keys(folder) if k.startswith("_orig_mod.")]
        plain = T.GPT2LMHeadModel.from_pretrained(folder).eval()
        assert torch.equal(plain(X).logits, last(X).logits)
        again = hf.from_pretrained(T.GPT2LMHeadModel, folder).eval()
        assert torch.equal(again(X).logits, last(X).logits)
        assert tying.count(again).physical == tying.count(last).physical
