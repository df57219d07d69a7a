"""Following get_peft_model's advice for GPT-2 ('pass modules_to_save=['lm_head'] with
ensure_weight_tying=True') gives an adapter that from_pretrained refuses, advising the very
same config (peft saves the entry as 'transformer.wte', on which it no longer acts)."""

import pytest

import tying
from tests.interop import models as M

peft = pytest.importorskip("peft")
from tying.interop.lora import from_pretrained, get_peft_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _config(saved):
    return peft.LoraConfig(
        r=2, target_modules=["c_attn"], modules_to_save=saved, ensure_weight_tying=True
    )


def test_the_advised_gpt2_entry_survives_save_and_load(tmp_path):
    with pytest.raises(tying.TieError) as err:
        get_peft_model(M.gpt2(tie_word_embeddings=True), _config(["wte"]))
    if "modules_to_save=['lm_head']" not in str(err.value):
        return  # no entry advised: nothing to follow
    pm = get_peft_model(M.gpt2(tie_word_embeddings=True), _config(["lm_head"]))  # the advice
    pm.save_pretrained(tmp_path)
    from_pretrained(M.gpt2(tie_word_embeddings=True), str(tmp_path))  # TieError today
