"""The config-flag refusal names the head's weight, not a bias tied beside it (BERT)."""

import json

import pytest
import torch

import tying
import tying.hf
from tests.interop import models as M

T = M.transformers
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def test_bert_flag_refusal_names_the_decoder_weight_as_the_embedding(tmp_path):
    cfg = T.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    saved = T.BertForMaskedLM(cfg)
    saved.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "tie_word_embeddings": False}))
    # before: "... whose cls.predictions.decoder.bias is the embedding"
    with pytest.raises(
        tying.TieError, match=r"whose cls\.predictions\.decoder\.weight is the embedding"
    ):
        tying.hf.from_pretrained(T.BertForMaskedLM, tmp_path)
