"""A failed Plan.apply, untie, load or save leaves the model and the folder as they were
(stop 34).

Each property test makes the Nth call to one of the internal steps raise, for every N until
the call succeeds, and compares a full snapshot of the model (state dict values, data
pointers and identities, named_parameters, module classes, parameter dicts, tying's
bookkeeping, load pre-hooks, the tie report) with the one taken before.
"""

from __future__ import annotations

import errno
import importlib

import pytest
import torch
from safetensors.torch import save_file, save_model
from torch import nn

import tying

slots = importlib.import_module("tying.core.slots")
plan_mod = importlib.import_module("tying.core.plan")
verify_mod = importlib.import_module("tying.core.verify")
stale = importlib.import_module("tying.core.stale")
count_mod = importlib.import_module("tying.core.count")
# the atomic write lives here since stop 53 (split out of checkpoint.py)
file_writing = importlib.import_module("tying.core.file_writing")


class Injected(Exception):
    pass


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 5, bias=False)
        self.enc = nn.Linear(4, 3)
        self.dec = nn.Linear(3, 4)
        self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
        self.h2 = nn.Linear(4, 4)


PLAN = tying.Plan(
    [
        tying.share("head.weight", like="emb.weight"),
        tying.share("dec.weight", like="enc.weight", relation=tying.Transposed()),
        tying.share("blocks.*", like="blocks.0"),
        tying.share("h2.weight", like="blocks.0.weight"),
    ]
)
RETIE = tying.Plan(
    [
        tying.free("head.weight"),
        tying.share("blocks.2", like="blocks.1"),
        tying.share("dec.weight", like=None, relation=tying.Scaled()),
    ]
)


def _plain(seed=0):
    torch.manual_seed(seed)
    m = Model()
    m.h2.weight = m.blocks[0].weight  # a hand tie
    return m


def _tied(seed=0):
    m = _plain(seed)
    PLAN.apply(m)
    return m


def _snapshot(model):
    sd = model.state_dict(keep_vars=True)
    modules = []
    for name, m in model.named_modules(remove_duplicate=False):
        own = {k: repr(v) for k, v in m.__dict__.items() if k.startswith("_tying")}
        modules.append(
            (
                name,
                id(m),
                type(m),
                tuple((k, id(v)) for k, v in m._parameters.items()),
                tuple(m._load_state_dict_pre_hooks),
                tuple(m._forward_pre_hooks),
                sorted(own.items()),
            )
        )
    return {
        "values": {k: v.detach().clone() for k, v in sd.items()},
        "tensors": {k: (id(v), v.data_ptr(), v.requires_grad) for k, v in sd.items()},
        "params": [(n, id(p)) for n, p in model.named_parameters(remove_duplicate=False)],
        "modules": modules,
        "ties": repr(tying.ties(model)),
    }


def _assert_same(before, after):
    assert before["values"].keys() == after["values"].keys()
    for k, v in before["values"].items():
        assert torch.equal(v, after["values"][k]), k
    for key in ("tensors", "params", "modules", "ties"):
        assert before[key] == after[key], key


def _inject(monkeypatch, targets, n):
    calls = [0]
    for owner, attr in targets:
        real = getattr(owner, attr)

        def wrapped(*args, _real=real, _name=attr, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                raise Injected(f"call {n}: {_name}")
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, attr, wrapped)


def _every_failure_leaves_the_model_alone(monkeypatch, make, call, targets):
    failures = 0
    for n in range(1, 200):
        model = make()
        before = _snapshot(model)
        _inject(monkeypatch, targets, n)
        try:
            call(model)
        except Injected:
            failures += 1
        else:
            return failures
        finally:
            monkeypatch.undo()
        _assert_same(before, _snapshot(model))
    raise AssertionError("the call never succeeded")


APPLY_STEPS = [
    (plan_mod, "install"),
    (plan_mod, "uninstall"),
    (slots, "_set_class"),
    (plan_mod, "guard_loading"),
    (nn.Module, "register_load_state_dict_pre_hook"),
    (plan_mod, "_dropped_for_sources"),
    (plan_mod, "Inventory"),
    (stale, "record"),
    (count_mod, "count"),
    (torch.Tensor, "clone"),
]


@pytest.mark.parametrize("make,plan", [(_plain, PLAN), (_tied, RETIE)], ids=["tie", "retie"])
def test_a_plan_apply_failing_at_any_step_leaves_the_model_as_it_was(monkeypatch, make, plan):
    # the old code left load pre-hooks behind, and a failure in the steps after the ties
    # (the stale-optimizer records, the report's count) left the model tied while apply raised
    n = _every_failure_leaves_the_model_alone(monkeypatch, make, plan.apply, APPLY_STEPS)
    assert n > 15
    model = make()
    plan.apply(model)
    assert tying.verify(model) > 0


def test_untie_failing_at_any_step_leaves_the_model_as_it_was(monkeypatch):
    # the old code untied slot after slot with no way back: a failure part way left some
    # slots untied, the rest tied, and the hand tie in one piece
    steps = [
        (verify_mod, "uninstall"),
        (slots, "_set_class"),
        (stale, "record"),
        (torch.Tensor, "clone"),
    ]
    n = _every_failure_leaves_the_model_alone(monkeypatch, _tied, tying.untie, steps)
    assert n > 10
    model = _tied()
    assert tying.untie(model) == 7 and tying.ties(model) == []
    assert model.h2.weight is not model.blocks[0].weight


@pytest.mark.parametrize("make", [_plain, _tied], ids=["untied", "tied"])
def test_a_load_failing_at_any_tie_step_leaves_the_model_as_it_was(monkeypatch, tmp_path, make):
    src = _tied(1)
    path = tying.save(src, tmp_path / "m.safetensors")
    steps = [
        (plan_mod, "install"),
        (plan_mod, "uninstall"),
        (slots, "_set_class"),
        (plan_mod, "guard_loading"),
        (nn.Module, "register_load_state_dict_pre_hook"),
        (nn.Module, "load_state_dict"),
        (stale, "record"),
    ]
    _every_failure_leaves_the_model_alone(monkeypatch, make, lambda m: tying.load(m, path), steps)
    model = make()
    tying.load(model, path)
    assert torch.equal(model.enc.weight, src.enc.weight) and tying.verify(model) > 0


def _linears(seed=0):
    torch.manual_seed(seed)
    return nn.ModuleDict({"a": nn.Linear(3, 4), "b": nn.Linear(4, 4), "c": nn.Linear(4, 2)})


def test_a_load_into_an_inference_tensor_is_refused_before_anything_is_loaded(tmp_path):
    # load_state_dict copies tensor after tensor and raises at the end: a and b were loaded
    path = tying.save(_linears(1), tmp_path / "m.safetensors")
    model = _linears(0)
    with torch.inference_mode():
        model["c"] = nn.Linear(4, 2)
    before = _snapshot(model)
    with pytest.raises(tying.TieError, match=r"c.weight is an inference tensor.*left as it was"):
        tying.load(model, path)
    _assert_same(before, _snapshot(model))
    with torch.inference_mode():  # the fix the message gives
        tying.load(model, path)
    assert torch.equal(model["a"].weight, _linears(1)["a"].weight)


def test_a_load_into_an_expanded_parameter_is_refused_before_anything_is_loaded(tmp_path):
    path = tying.save(_linears(1), tmp_path / "m.safetensors")
    model = _linears(0)
    model["c"].bias = nn.Parameter(torch.zeros(1).expand(2))
    before = _snapshot(model)
    with pytest.raises(tying.TieError, match=r"c.bias is an expanded tensor \(stride \(0,\)"):
        tying.load(model, path)
    _assert_same(before, _snapshot(model))


# -- files a user hands us -----------------------------------------------------------


def _hand_tied(seed=0):
    torch.manual_seed(seed)
    m = nn.ModuleDict(
        {"emb": nn.Embedding(5, 3), "head": nn.Linear(3, 5, bias=False), "x": nn.Linear(3, 3)}
    )
    m["head"].weight = m["emb"].weight
    return m


def _untied(seed=0):
    m = _hand_tied(seed)
    m["head"].weight = nn.Parameter(m["emb"].weight.detach().clone())
    return m


def test_a_torch_save_file_is_named_as_one(tmp_path):
    # it said "truncated or not a safetensors file ...; restore it from a good copy"
    for name in ("m.pt", "m.safetensors"):
        torch.save(_hand_tied().state_dict(), tmp_path / name)
        with pytest.raises(tying.TieError, match=r"is a torch.save \(pickle\) file.*weights_only"):
            tying.load(_hand_tied(1), tmp_path / name)


def test_a_file_of_a_newer_tying_says_to_upgrade(tmp_path):
    # it said "re-save it with this version" / "malformed ...; restore it from a good copy"
    from safetensors import safe_open

    good = tying.save(_hand_tied(), tmp_path / "m.safetensors")
    with safe_open(str(good), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["tying.format"] = "tying/3"
    save_file(tensors, str(tmp_path / "new.safetensors"), metadata=meta)
    for verify_hash in (True, False):
        model = _hand_tied(1)
        before = _snapshot(model)
        with pytest.raises(tying.TieError, match=r"newer version of tying.*'tying/3'.*upgrade"):
            tying.load(model, tmp_path / "new.safetensors", verify_hash=verify_hash)
        _assert_same(before, _snapshot(model))


def test_a_plain_file_that_stores_a_hand_tie_once_loads_into_the_tied_model(tmp_path):
    # transformers' model.safetensors and safetensors' save_model leave the tied key out;
    # it was refused, saying the file "stores it as its own tensor"
    src = _hand_tied(3)
    save_model(src, str(tmp_path / "sm.safetensors"))  # metadata {'head.weight': 'emb.weight'}
    only = {k: v for k, v in src.state_dict().items() if k != "head.weight"}
    save_file(only, str(tmp_path / "hf.safetensors"), metadata={"format": "pt"})
    for name in ("sm.safetensors", "hf.safetensors"):
        model = _hand_tied(0)
        tying.load(model, tmp_path / name, verify_hash=False)
        assert model["head"].weight is model["emb"].weight
        assert torch.equal(model["emb"].weight, src["emb"].weight)
        assert torch.equal(model["x"].bias, src["x"].bias)


def test_a_plain_file_that_stores_a_tie_once_into_an_untied_model_names_the_fix(tmp_path):
    save_model(_hand_tied(3), str(tmp_path / "sm.safetensors"))
    model = _untied(0)
    before = _snapshot(model)
    with pytest.raises(
        tying.TieError,
        match=r"stores head.weight as the same tensor as emb.weight.*"
        r"model.head.weight = model.emb.weight",
    ):
        tying.load(model, tmp_path / "sm.safetensors", verify_hash=False)
    _assert_same(before, _snapshot(model))


def test_a_tying_file_that_stores_the_hand_tied_key_apart_is_still_refused(tmp_path):
    # only plain files may leave a hand-tied key out; a tying file that stores it as a
    # tensor of its own contradicts the tie
    tying.save(_untied(3), tmp_path / "m.safetensors")
    with pytest.raises(tying.TieError, match=r"stores it as its own tensor; let them part"):
        tying.load(_hand_tied(0), tmp_path / "m.safetensors")


# -- the folder after the rename -------------------------------------------------------


def _fsync_folder_fails(monkeypatch, code):
    real = file_writing.os.fsync

    def fsync(fd):
        if file_writing.stat.S_ISDIR(file_writing.os.fstat(fd).st_mode):
            raise OSError(code, file_writing.os.strerror(code))
        return real(fd)

    monkeypatch.setattr(file_writing.os, "fsync", fsync)


def test_a_file_system_without_folder_fsync_saves(monkeypatch, tmp_path):
    # EINVAL from fsync of a folder (some network and FUSE file systems): every save raised
    # after it had replaced the file
    _fsync_folder_fails(monkeypatch, errno.EINVAL)
    path = tying.save(_hand_tied(2), tmp_path / "m.safetensors")
    monkeypatch.undo()
    model = _hand_tied(0)
    tying.load(model, path)
    assert torch.equal(model["emb"].weight, _hand_tied(2)["emb"].weight)


def test_a_folder_fsync_error_after_the_rename_says_the_file_is_in_place(monkeypatch, tmp_path):
    _fsync_folder_fails(monkeypatch, errno.EIO)
    with pytest.raises(OSError, match=r"the new file is in place at .*m.safetensors.*power loss"):
        tying.save(_hand_tied(2), tmp_path / "m.safetensors")


def test_an_optimizer_over_the_model_steps_after_a_failed_load(monkeypatch, tmp_path):
    # the failed load's stale-optimizer records are taken back with its ties, so a
    # traceback that keeps its new Parameters alive does not refuse this optimizer's step
    path = tying.save(_tied(1), tmp_path / "m.safetensors")
    model = _plain(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _inject(monkeypatch, [(nn.Module, "load_state_dict")], 1)
    with pytest.raises(Injected) as caught:
        tying.load(model, path)
    monkeypatch.undo()
    assert caught.value.__traceback__ is not None  # the frames holding the new Parameters
    model.enc(torch.ones(2, 4)).sum().backward()
    before = model.enc.weight.detach().clone()
    opt.step()
    assert not torch.equal(model.enc.weight, before)


# -- stop 35: a copy_ that fails part way through a load --------------------------------


class _Tagged(nn.Parameter):
    """A parameter subclass (as quantization and sharding libraries make): its copy_ is its
    own, so it may fail part way through a load."""


def _with_subclass(make):
    def build(seed=0):
        m = make(seed)
        owner = m["c"] if isinstance(m, nn.ModuleDict) else m.enc
        owner.bias = _Tagged(owner.bias.detach().clone())
        return m

    return build


@pytest.mark.parametrize("make", [_plain, _tied, _linears], ids=["untied", "tied", "plain"])
def test_a_load_whose_copy_fails_at_any_tensor_leaves_the_model_as_it_was(
    monkeypatch, tmp_path, make
):
    # a plain model kept no copy of its values: load_state_dict copied tensor after
    # tensor, so a copy_ that failed at the Nth left the N-1 before it loaded from the file
    # (load_state_dict reports the failure as a RuntimeError naming the tensor). A model of
    # dense CPU tensors of torch's own types keeps no copy: their copy_ cannot fail once
    # shapes, dtypes, writability and memory were checked, so the model has a subclass.
    make = _with_subclass(make)
    path = tying.save(make(1), tmp_path / "m.safetensors")
    failures = 0
    for n in range(1, 200):
        model = make()
        before = _snapshot(model)
        _inject(monkeypatch, [(torch.Tensor, "copy_")], n)
        try:
            tying.load(model, path)
        except RuntimeError as err:
            assert f"call {n}: copy_" in str(err)
            failures += 1
        else:
            break
        finally:
            monkeypatch.undo()
        _assert_same(before, _snapshot(model))
    assert failures >= 5
    model = make()
    tying.load(model, path)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), make(1).parameters()))


class _RefusesCopies(nn.Parameter):
    """A parameter subclass whose copy_ refuses (a frozen or read-only parameter type)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.copy_ and isinstance(args[0], _RefusesCopies):
            raise RuntimeError("this parameter is read-only")
        return super().__torch_function__(func, types, args, kwargs or {})


def test_a_parameter_that_refuses_its_copy_leaves_every_other_one_as_it_was(tmp_path):
    path = tying.save(_linears(1), tmp_path / "m.safetensors")
    model = _linears(0)
    model["c"].bias = _RefusesCopies(model["c"].bias.detach().clone())
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="c.bias.*this parameter is read-only"):
        tying.load(model, path)
    _assert_same(before, _snapshot(model))  # a.weight ... c.weight were loaded


# -- stop 35: tensors that share memory -------------------------------------------------


def test_a_load_into_parameters_that_share_memory_is_refused_when_the_file_differs(tmp_path):
    # c.weight was a view of b.weight's rows 2 and 3: the load wrote c's values over b's
    # rows and reported success
    src = _linears(1)
    path = tying.save(src, tmp_path / "m.safetensors")
    model = _linears(0)
    model["c"].weight = nn.Parameter(model["b"].weight.data[2:])
    before = _snapshot(model)
    with pytest.raises(
        tying.TieError,
        match=r"b.weight shares memory with c.weight .*differ where they meet.*"
        r"nn.Parameter\(module.weight.detach\(\).clone\(\)\)\); the model was left as it was",
    ):
        tying.load(model, path)
    _assert_same(before, _snapshot(model))
    model["c"].weight = nn.Parameter(model["c"].weight.detach().clone())  # the fix given
    tying.load(model, path)
    assert torch.equal(model["b"].weight, src["b"].weight)


def test_a_load_into_a_tensor_whose_elements_share_memory_is_refused(tmp_path):
    path = tying.save(_linears(1), tmp_path / "m.safetensors")
    model = _linears(0)
    model["c"].weight = nn.Parameter(torch.zeros(5).as_strided((2, 4), (1, 1)))
    before = _snapshot(model)
    with pytest.raises(tying.TieError, match=r"c.weight shares memory between its own elements"):
        tying.load(model, path)
    _assert_same(before, _snapshot(model))


def test_views_that_do_not_meet_or_agree_where_they_meet_load_as_before(tmp_path):
    src = _linears(1)
    path = tying.save(src, tmp_path / "m.safetensors")
    model = _linears(0)
    flat = torch.zeros(6)  # two biases as slices of one buffer, side by side
    model["c"].bias = nn.Parameter(flat[:2])
    model["a"].bias = nn.Parameter(flat[2:])
    tying.load(model, path)
    assert torch.equal(model["c"].bias, src["c"].bias)
    assert torch.equal(model["a"].bias, src["a"].bias)
    fused = torch.zeros(4, 8)  # interleaved columns of one storage: no element shared
    model["b"].weight = nn.Parameter(fused[:, 0::2])
    model["c"].weight = nn.Parameter(fused[:2, 1::2])
    tying.load(model, path)
    assert torch.equal(model["b"].weight, src["b"].weight)
    assert torch.equal(model["c"].weight, src["c"].weight)
