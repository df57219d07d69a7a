"""``per_example_norms`` refuses inputs it would turn into wrong norms (stop 38).

Entries of different batch sizes were broadcast: ``{"a": (3, 2), "b": (1, 2)}`` added
the one row of ``b`` to every example's norm, with no error. An empty dict gave a 0-d
tensor instead of a batch of norms.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tying.train import per_example_norms


def test_entries_of_different_batches_are_refused_naming_both():
    with pytest.raises(ValueError, match=r"'a' holds 3 examples but 'b' holds 1"):
        per_example_norms({"a": torch.ones(3, 2), "b": torch.ones(1, 2)})


def test_no_gradients_and_a_0d_entry_are_refused():
    with pytest.raises(ValueError, match=r"no per-example gradients were given"):
        per_example_norms({})
    with pytest.raises(ValueError, match=r"'w' is a 0-d tensor"):
        per_example_norms({"w": torch.tensor(2.0)})


@settings(derandomize=True, deadline=None, max_examples=40)
@given(
    B=st.integers(1, 5),
    shapes=st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_property_norms_equal_the_norm_of_each_examples_concatenated_gradient(
    B, shapes, seed, dtype
):
    gen = torch.Generator().manual_seed(seed)
    grads = {f"p{i}": torch.randn(B, *s, generator=gen, dtype=dtype) for i, s in enumerate(shapes)}
    want = torch.stack(
        [torch.cat([g[b].reshape(-1).double() for g in grads.values()]).norm() for b in range(B)]
    )
    got = per_example_norms(grads)
    assert got.shape == (B,)
    torch.testing.assert_close(
        got.double(), want, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0
    )
