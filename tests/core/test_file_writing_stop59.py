"""Stop 59: save named '.' for an empty path, and replaced files it did not write."""

import ast
import os
import pathlib

import pytest
import torch
from safetensors.torch import save_file

import tying


def test_an_empty_path_is_named_as_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"the path is empty \(''\); give a file path"):
        tying.save(torch.nn.Linear(2, 2), "")  # it said "'.' is a folder"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"my notes", b"\x80\x02}q\x00.", b"x" * 20])
def test_a_file_that_is_not_safetensors_is_left_as_it_was(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(FileExistsError, match=r"notes\.txt' exists and is not a safetensors"):
        tying.save(torch.nn.Linear(2, 2), path)  # it was replaced by the model, no word
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_the_advice_works_when_followed(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(FileExistsError, match=r"os\.remove\(") as err:
        tying.save(torch.nn.Linear(2, 2), path)
    advice = str(err.value).split("(os.remove(")[1].split("))")[0]
    os.remove(ast.literal_eval(advice))
    m = torch.nn.Linear(2, 2)
    tying.save(m, path)
    fresh = torch.nn.Linear(2, 2)
    tying.load(fresh, path)
    assert torch.equal(fresh.weight, m.weight)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_is_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="is not a regular file"):
        tying.save(torch.nn.Linear(2, 2), fifo)  # the FIFO was renamed over: a plain file
    assert pathlib.Path(fifo).is_fifo()


def test_legitimate_targets_are_still_replaced(tmp_path):
    m = torch.nn.Linear(2, 2)
    empty = tmp_path / "made_by_mkstemp.safetensors"
    empty.write_bytes(b"")
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    ours = tmp_path / "ours.safetensors"
    tying.save(m, ours)
    link = tmp_path / "link.safetensors"
    link.symlink_to(ours)
    for path in (empty, plain, ours, ours, link, tmp_path / "new" / "m.safetensors"):
        tying.save(m, path)
        fresh = torch.nn.Linear(2, 2)
        tying.load(fresh, path)
        assert torch.equal(fresh.weight, m.weight)
    assert link.is_symlink()
    assert tmp_path.joinpath("new").is_dir()


def test_a_path_ending_in_a_separator_names_a_folder(tmp_path):
    m = torch.nn.Linear(2, 2)
    ckpt = str(tmp_path / "ckpt") + os.sep
    with pytest.raises(IsADirectoryError, match=r"ends in '/', so it names a folder") as err:
        tying.save(m, ckpt)  # it wrote a file named "ckpt"
    assert not (tmp_path / "ckpt").exists()
    advice = str(err.value).split("e.g. ")[1].split(";")[0]
    tying.save(m, ast.literal_eval(advice))  # the advice, followed
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
