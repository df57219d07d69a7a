"""Stop 39: ``tying.hf.save_pretrained`` to a path that is an existing file.

The whole save was written into a temporary folder beside it, then ``os.mkdir`` of the
path failed with a bare ``[Errno 17] File exists``. It is refused first now, naming the
path and the fix; the file stays as it was and nothing else is written (plain HF logs an
error and returns, having saved nothing).
"""

from __future__ import annotations

import re

import pytest

from tests.interop import models as M

hf = pytest.importorskip("tying.hf")


def test_saving_to_a_path_that_is_a_file_is_refused_naming_it_and_leaves_it(tmp_path):
    model = M.gpt2()
    M.GPT2_PLAN.apply(model)
    target = tmp_path / "checkpoint"
    target.write_bytes(b"an earlier file, not a folder")
    with pytest.raises(
        FileExistsError,
        match=rf"tying\.hf\.save_pretrained: {re.escape(repr(str(target)))} is a file, not a "
        rf"folder; .*Pass a folder path instead .*the file was left as it was and nothing was "
        rf"written",
    ):
        hf.save_pretrained(model, target)
    assert target.read_bytes() == b"an earlier file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no temporary left
    # plain HF writes nothing there either; a folder path beside it saves as usual
    model.save_pretrained(target)
    assert target.read_bytes() == b"an earlier file, not a folder"
    assert (hf.save_pretrained(model, tmp_path / "saved") / "config.json").is_file()
