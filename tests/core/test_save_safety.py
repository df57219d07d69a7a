"""tying.save never damages what is already on disk (stop 28 review).

A failed save leaves the old file byte-identical and no temporary file; a symlink is
written through; a file keeps its mode; a read-only file, a folder and a tie whose
source module was replaced are refused before anything is written.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch
from torch import nn

import tying
from tying.core import checkpoint


def _model(seed=0):
    torch.manual_seed(seed)
    m = nn.ModuleDict({"emb": nn.Embedding(5, 3), "head": nn.Linear(3, 5, bias=False)})
    tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)
    return m


def _fresh():
    return nn.ModuleDict({"emb": nn.Embedding(5, 3), "head": nn.Linear(3, 5, bias=False)})


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "store" / "model.safetensors"
    real.parent.mkdir()
    tying.save(_model(0), real)
    link = tmp_path / "latest.safetensors"
    link.symlink_to(real)
    m = _model(1)
    tying.save(m, link)
    assert link.is_symlink() and os.path.realpath(link) == str(real)
    fresh = _fresh()
    tying.load(fresh, real)  # the file the link points to holds the new model
    assert torch.equal(fresh["emb"].weight, m["emb"].weight)
    assert _listing(tmp_path / "store") == ["model.safetensors"]


def test_an_existing_file_keeps_its_permission_bits(tmp_path):
    path = tmp_path / "m.safetensors"
    tying.save(_model(0), path)
    os.chmod(path, 0o640)
    tying.save(_model(1), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_a_read_only_file_or_a_folder_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "m.safetensors"
    tying.save(_model(0), path)
    os.chmod(path, 0o444)
    before = path.read_bytes()
    with pytest.raises(PermissionError, match=r"is read-only \(mode 444\).*chmod u\+w"):
        tying.save(_model(1), path)
    assert path.read_bytes() == before and _listing(tmp_path) == ["m.safetensors"]
    with pytest.raises(IsADirectoryError, match=r"is a folder; give a file path"):
        tying.save(_model(1), tmp_path)


def test_a_tie_whose_source_module_was_replaced_is_refused_before_writing(tmp_path):
    # the old code wrote a file whose tie read '' over the good one: load refused it
    path = tmp_path / "m.safetensors"
    m = _model(0)
    tying.save(m, path)
    before = path.read_bytes()
    m["emb"] = nn.Embedding(5, 3)
    with pytest.raises(
        tying.TieError,
        match=r"head.weight is tied to a tensor outside the "
        r"model.*put the module it replaced back.*nothing was written",
    ):
        tying.save(m, path)
    assert path.read_bytes() == before and _listing(tmp_path) == ["m.safetensors"]
    tying.load(_fresh(), path)  # still the good file


def test_metadata_that_would_not_load_back_is_never_written(tmp_path):
    # save_state is what tying.distributed.save writes a gathered state with
    path = tmp_path / "m.safetensors"
    tying.save(_model(0), path)
    before = path.read_bytes()
    info = tying.ties(_model(1))[0]
    bad = type(info)(target="head.weight", source="emb.*", relation=info.relation)
    state = {"emb.weight": torch.zeros(5, 3)}
    with pytest.raises(tying.TieError, match=r"save: refusing to write .*would not load back"):
        checkpoint.save_state(state, [bad], path)
    assert path.read_bytes() == before and _listing(tmp_path) == ["m.safetensors"]


def _raise(exc):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.mark.parametrize(
    "where,exc",
    [
        ("save_file", OSError(errno.ENOSPC, "No space left on device")),
        ("fsync", OSError(errno.EIO, "Input/output error")),
        ("replace", KeyboardInterrupt()),
    ],
)
def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary(
    tmp_path, monkeypatch, where, exc
):
    import safetensors.torch

    path = tmp_path / "m.safetensors"
    tying.save(_model(0), path)
    before = path.read_bytes()
    if where == "save_file":
        real = safetensors.torch.save_file

        def half_written(tensors, filename, metadata=None):
            real(tensors, filename, metadata=metadata)
            raise exc

        monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    else:
        monkeypatch.setattr(checkpoint.os, where, _raise(exc))
    with pytest.raises(type(exc)):
        tying.save(_model(1), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.safetensors"]


def test_loading_a_folder_says_so(tmp_path):
    # it said "truncated or not a safetensors file (OSError: No such device)"
    with pytest.raises(IsADirectoryError, match=r"is a folder; give the file tying.save wrote"):
        tying.load(_fresh(), tmp_path)


def test_a_dtype_safetensors_cannot_write_is_refused_by_name_and_the_old_file_kept(tmp_path):
    """Stop 34: a complex128 model failed inside safetensors with a bare KeyError."""
    path = tmp_path / "m.safetensors"
    tying.save(_model(), path)
    before = path.read_bytes()

    def tied(dtype):
        m = nn.ParameterDict({k: nn.Parameter(torch.randn(3, dtype=dtype)) for k in "ab"})
        tying.Plan([tying.share("b", like="a", relation=tying.Flipped())]).apply(m)
        return m

    m = tied(torch.complex128)
    with pytest.raises(
        tying.TieError,
        match=r"save: a is torch.complex128, which safetensors cannot write \(it writes "
        r".*complex64.*\); cast the model to one of those first",
    ):
        tying.save(m, path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    m = tied(torch.complex64)  # the fix
    tying.save(m, path)
    fresh = nn.ParameterDict({k: nn.Parameter(torch.zeros(3, dtype=torch.complex64)) for k in "ab"})
    tying.load(fresh, path)
    assert torch.equal(fresh["b"].detach(), m["a"].detach().flip(-1))


# -- stop 35: folders a failed save made --------------------------------------------------


def _failing_save_file(monkeypatch, before_raising=None):
    import safetensors.torch

    def fails(tensors, filename, metadata=None):
        if before_raising is not None:
            before_raising(filename)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", fails)


def test_a_failed_save_removes_the_folders_it_made_and_no_other(tmp_path, monkeypatch):
    # the folders made for runs/exp1/ckpt/model.safetensors stayed behind, empty
    (tmp_path / "runs").mkdir()
    _failing_save_file(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        tying.save(_model(0), tmp_path / "runs" / "exp1" / "ckpt" / "m.safetensors")
    assert _listing(tmp_path) == ["runs"] and _listing(tmp_path / "runs") == []
    monkeypatch.undo()
    path = tying.save(_model(0), tmp_path / "runs" / "exp1" / "ckpt" / "m.safetensors")
    assert path.exists()  # missing folders are still made


def test_a_folder_a_failed_save_made_stays_when_something_else_was_put_in_it(tmp_path, monkeypatch):
    def other_writer(filename):  # another process writes into the new folder meanwhile
        (tmp_path / "a" / "theirs.txt").write_text("keep")

    _failing_save_file(monkeypatch, other_writer)
    with pytest.raises(OSError, match="No space left"):
        tying.save(_model(0), tmp_path / "a" / "b" / "m.safetensors")
    assert _listing(tmp_path / "a") == ["theirs.txt"]


# -- stop 35 (second round): memory two parameters share, a file in the path -----------------


def _views(seed):
    torch.manual_seed(seed)
    m = nn.ModuleDict({"b": nn.Linear(4, 4), "c": nn.Linear(4, 2), "e": nn.Linear(4, 4)})
    m["c"].weight = nn.Parameter(m["b"].weight.data[2:])  # rows 2, 3 of b.weight
    m["e"].register_buffer("rb", m["b"].weight.data[1])  # a buffer reading row 1
    return m


def test_parameters_that_are_overlapping_views_save_and_load_back_equal(tmp_path):
    # safetensors refused in its own words ("Some tensors share memory ... use save_model")
    m = _views(0)
    path = tying.save(m, tmp_path / "m.safetensors")
    same = _views(1)  # built the same way: the views hold again after the load
    tying.load(same, path)
    plain = nn.ModuleDict({"b": nn.Linear(4, 4), "c": nn.Linear(4, 2), "e": nn.Linear(4, 4)})
    plain["e"].register_buffer("rb", torch.zeros(4))
    tying.load(plain, path)
    for loaded in (same, plain):
        for (k, want), got in zip(m.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(got, want), k
    assert same["c"].weight.data_ptr() == same["b"].weight[2].data_ptr()


def test_saving_under_a_path_through_a_file_names_the_file_and_writes_nothing(tmp_path):
    (tmp_path / "runs").write_text("a file, not a folder")
    for path in (tmp_path / "runs" / "m.safetensors", tmp_path / "runs" / "a" / "m.safetensors"):
        with pytest.raises(NotADirectoryError, match=r"'.*runs' is a file, not a folder; save to"):
            tying.save(_model(0), path)
    assert _listing(tmp_path) == ["runs"]
    assert (tmp_path / "runs").read_text() == "a file, not a folder"
