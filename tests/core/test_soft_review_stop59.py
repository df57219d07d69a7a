"""Review of 6c4ea3d (save refuses foreign files; laplacian_penalty undirected=) and 37326f9
(fit_multitask undirected=), stop 59."""

import ast
import hashlib
import os
import pathlib

import numpy as np
import pytest
import torch

import tying
from tying.soft import laplacian_penalty
from tying.train import MultiTaskNet, fit_multitask


def _digest(path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def test_a_read_only_foreign_file_is_not_told_to_chmod(tmp_path):
    # it said "is read-only (mode 444); make it writable (chmod u+w)"; once that was
    # done, the next save refused the file as not safetensors
    path = tmp_path / "notes.pt"
    torch.save({"w": torch.ones(2)}, path)
    os.chmod(path, 0o444)
    before = _digest(path)
    with pytest.raises(FileExistsError, match=r"notes\.pt' exists and is not a safetensors"):
        tying.save(torch.nn.Linear(2, 2), path)
    assert _digest(path) == before and oct(os.stat(path).st_mode & 0o777) == "0o444"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_read_only_fifo_is_named_as_no_regular_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o444)
    with pytest.raises(FileExistsError, match="is not a regular file"):
        tying.save(torch.nn.Linear(2, 2), fifo)  # it said "chmod u+w"
    assert fifo.is_fifo()


def test_a_read_only_safetensors_file_is_still_refused_as_read_only(tmp_path):
    path = tmp_path / "m.safetensors"
    tying.save(torch.nn.Linear(2, 2), path)
    os.chmod(path, 0o444)
    with pytest.raises(PermissionError, match=r"is read-only \(mode 444\).*chmod u\+w"):
        tying.save(torch.nn.Linear(2, 2), path)


class _PathLike:
    def __init__(self, p):
        self.p = p

    def __fspath__(self):
        return self.p


def test_bytes_and_bytes_pathlike_paths_save(tmp_path):
    m = torch.nn.Linear(2, 2)
    for path in (
        os.fsencode(tmp_path / "a.safetensors"),
        _PathLike(os.fsencode(tmp_path / "b.safetensors")),
    ):
        tying.save(m, path)  # TypeError: argument should be a str ... not <class 'bytes'>
        fresh = torch.nn.Linear(2, 2)
        tying.load(fresh, os.fsdecode(os.fspath(path)))
        assert torch.equal(fresh.weight, m.weight)


def test_a_trailing_dot_or_a_pathlike_slash_names_a_folder(tmp_path):
    m = torch.nn.Linear(2, 2)
    for given in (str(tmp_path / "ckpt") + os.sep + ".", _PathLike(str(tmp_path / "pl") + os.sep)):
        with pytest.raises(IsADirectoryError, match="so it names a folder") as err:
            tying.save(m, given)  # wrote a file named "ckpt" / "pl"
        assert sorted(p.name for p in tmp_path.iterdir()) == []
        advice = str(err.value).split("e.g. ")[1].split(";")[0]
        tying.save(m, ast.literal_eval(advice))
        assert ast.literal_eval(advice).endswith("model.safetensors")
        for p in tmp_path.iterdir():
            p.joinpath("model.safetensors").unlink()
            p.rmdir()


def test_a_trailing_slash_after_a_file_names_the_file(tmp_path):
    m = torch.nn.Linear(2, 2)
    path = tmp_path / "m.safetensors"
    tying.save(m, path)
    with pytest.raises(
        IsADirectoryError, match=r"to replace the file .*m\.safetensors', pass"
    ) as err:
        tying.save(m, str(path) + os.sep)  # advice 'm.safetensors/model.safetensors' failed
    advice = str(err.value).split(", pass ")[1].split(";")[0]
    tying.save(m, ast.literal_eval(advice))


def test_zero_d_numpy_keys_see_the_reverse_edge():
    a, b = torch.zeros(2), torch.ones(2)
    both = [(np.array(0), np.array(1)), (np.array(1), np.array(0))]
    with pytest.raises(ValueError, match="and its reverse"):
        laplacian_penalty([a, b], both, lam=2.0)  # 4.0 with no error
    assert laplacian_penalty([a, b], both, lam=2.0, undirected=True).item() == 2.0  # was 4.0
    with pytest.raises(ValueError, match=r"names True, which is not an index of params"):
        laplacian_penalty([a, b], [(0, np.array(True))], lam=1.0)  # NumPy's TypeError


def _net() -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), 2)


def test_fit_multitask_checks_undirected_whatever_lam():
    data = [(torch.randn(4, 2), torch.randn(4, 1)) for _ in range(2)]
    with pytest.raises(TypeError, match="undirected must be True, False or None"):
        fit_multitask(_net(), data, edges=[(0, 1)], lam=0.0, steps=1, undirected="yes")
    with pytest.raises(ValueError, match="and its reverse"):
        fit_multitask(_net(), data, edges=[(0, 1), (1, 0)], lam=0.0, steps=1)
    fit_multitask(_net(), data, edges=[(0, 1), (1, 0)], lam=0.0, steps=1, undirected=True)
