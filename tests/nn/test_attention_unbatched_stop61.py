"""nn.MultiheadAttention's unbatched (seq, d_model) call names the batch of one that serves
it (stop 61: the refusal named the shape only); the advice, followed, gives MHA's output."""

import pytest
import torch

from tests.nn.mha_pairs import E, mha_and_attention


@pytest.mark.parametrize("batch_first", [True, False])
def test_unbatched_call_names_a_batch_of_one_and_the_advice_works(batch_first):
    mha, att = mha_and_attention(batch_first=batch_first)
    x, mem = torch.randn(5, E, dtype=torch.float64), torch.randn(4, E, dtype=torch.float64)
    pad = torch.tensor([False, False, True, False])  # (S,): MHA's unbatched padding mask
    axis, take = (0, r"out\[0\]") if batch_first else (1, r"out\[:, 0\]")
    with pytest.raises(ValueError, match=rf"is a batch of one here: pass x\.unsqueeze\({axis}\)"):
        att(x, mem, key_padding_mask=pad)
    with pytest.raises(ValueError, match=rf"key_padding_mask\[None\]\) and take {take}"):
        att(x)
    out = att(x.unsqueeze(axis), mem.unsqueeze(axis), key_padding_mask=pad[None])
    out = out[0] if batch_first else out[:, 0]
    torch.testing.assert_close(out, mha(x, mem, mem, key_padding_mask=pad, need_weights=False)[0])


def test_other_shapes_keep_the_plain_message():
    _, att = mha_and_attention(batch_first=True)
    with pytest.raises(ValueError, match=r"got \(5, 3\)$"):
        att(torch.randn(5, 3, dtype=torch.float64))
