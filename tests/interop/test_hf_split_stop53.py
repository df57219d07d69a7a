"""``tying.interop.hf`` split by concept at stop 53 (saving here, resizing in ``hf_resize``):
every name that was importable from it, and from ``tying.hf``, still is, as the same object."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers", reason="the interop extra (transformers) is not installed")

import tying.hf  # noqa: E402
import tying.interop.hf as ihf  # noqa: E402
from tying.interop import hf_loading, hf_plan, hf_resize  # noqa: E402

PUBLIC = [
    "CONFIG_KEY",
    "from_pretrained",
    "hf_ties_plan",
    "logical_state_dict",
    "plan_from_json",
    "plan_to_json",
    "resize_token_embeddings",
    "save_pretrained",
]
# the module-level names the 971-line module defined before the split
MOVED = [
    "_resized_slots", "_refuse_wrapped", "_check_pad_to_multiple_of", "_embedding_tables",
    "_relation_extras", "_restore_relation_extras", "_slot_values", "_refuse_kept_rows_moved",
    "_refuse_tables_joined", "_refuse_ties_resize_cannot_keep", "_record_replaced",
    "_ModuleState", "resize_token_embeddings",
]  # fmt: skip


def test_every_name_is_importable_where_it_was_and_is_one_object():
    for name in PUBLIC:
        assert getattr(tying.hf, name) is getattr(ihf, name), name
    for name in MOVED:
        assert getattr(ihf, name) is getattr(hf_resize, name), name
    for name in ("_quiet", "_saved_names", "from_pretrained"):
        assert getattr(ihf, name) is getattr(hf_loading, name), name
    for name in ("CONFIG_KEY", "plan_to_json", "_config_ties", "_list_pairs"):
        assert getattr(ihf, name) is getattr(hf_plan, name), name
    assert tying.hf.resize_token_embeddings.__module__ == "tying.interop.hf_resize"
