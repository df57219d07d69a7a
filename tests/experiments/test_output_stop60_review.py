"""Stop 60 review: ``start_build`` refuses one id given as a string, as ``claim_folder`` does;
``claim_folder`` takes a NumPy bool as the bool it is.

``start_build(out, "param-counts")`` listed the id's letters before calling
``claim_folder`` (which then saw a list of one-letter ids) and wrote
``figures/p--*.png``, ``figures/a--*.png``, ... into the folder's manifest.
"""

from __future__ import annotations

import numpy as np
import pytest

from tying.experiments.output import claim_folder, discard_build, start_build


def test_start_build_one_id_as_a_string_is_refused(tmp_path):
    out = tmp_path / "rep"
    with pytest.raises(
        TypeError, match=r"ids must be a list of experiment ids, got 'param-counts'"
    ):
        start_build(out, "param-counts")
    assert not out.exists()  # nothing written before the refusal
    build = start_build(out, ["param-counts"])  # the advice, followed
    discard_build(build)


def test_claim_folder_takes_numpy_bools(tmp_path):
    """``fresh=np.any(...)`` said "fresh must be True or False, got np.True_ (bool)"."""
    out = tmp_path / "rep"
    claim_folder(out, ["param-counts"], fresh=np.True_, writes_page=np.False_)
    assert (out / ".tying-report.json").is_file()
    with pytest.raises(TypeError, match=r"fresh must be True or False, got 'no'"):
        claim_folder(out, ["param-counts"], fresh="no")
