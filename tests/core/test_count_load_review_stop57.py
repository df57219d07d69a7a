"""Tests that fail at HEAD (17b44da) and pass with the three patches in this folder."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as P

import tying


def test_count_of_a_meta_model_with_spectral_norm_and_orthogonal_as_at_base():
    m = nn.ModuleList([P.spectral_norm(nn.Linear(8, 4)), P.orthogonal(nn.Linear(4, 4))]).to("meta")
    c = tying.count(m)  # HEAD: TieError (aten::equal has no meta kernel); BASE: 56/56
    assert (c.logical, c.physical, len(c.groups)) == (56, 56, 0)


def test_plan_apply_on_a_meta_model_with_a_spectral_norm_layer():
    m = nn.ModuleDict(
        {
            "emb": nn.Embedding(10, 8),
            "head": nn.Linear(8, 10, bias=False),
            "d": P.spectral_norm(nn.Linear(8, 8)),
        }
    ).to("meta")
    tying.Plan([tying.share("head.weight", like="emb.weight")]).apply(m)  # HEAD: TieError
    assert m["head"].weight is m["emb"].weight


def test_count_draws_no_random_number():
    class Noisy(nn.Module):
        def forward(self, x):
            return x + 0 * torch.randn_like(x)

    m = nn.Linear(8, 4)
    torch.nn.utils.parametrize.register_parametrization(m, "weight", Noisy())
    torch.manual_seed(1)
    tying.count(m)
    after = torch.rand(1)
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(1))  # HEAD: count advanced the global RNG


def test_a_modules_tuple_record_round_trips_through_its_own_file(tmp_path):
    class Rec(nn.Linear):
        def _save_to_state_dict(self, dest, prefix, keep_vars):
            super()._save_to_state_dict(dest, prefix, keep_vars)
            dest._metadata.setdefault(prefix[:-1], {})["layout"] = (
                self.in_features,
                self.out_features,
            )

        def _load_from_state_dict(self, sd, prefix, local_metadata, *a):
            saved = local_metadata.get("layout")
            if saved is not None and saved != (self.in_features, self.out_features):
                raise ValueError(f"saved layout {saved!r}")
            super()._load_from_state_dict(sd, prefix, local_metadata, *a)

    path = tying.save(Rec(3, 2), tmp_path / "rec.safetensors")
    tying.load(Rec(3, 2), path)  # HEAD: ValueError saved layout [3, 2] (torch.load_state_dict: ok)


def test_the_advice_for_a_file_of_the_source_alone_works_when_followed(tmp_path):
    path = tying.save(nn.ModuleDict({"a": nn.Linear(3, 3)}), tmp_path / "a.safetensors")
    m = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 3)})
    tying.Plan([tying.share("b", like="a")]).apply(m)
    with pytest.raises(
        tying.TieError,
        match=r"neither declares that tie nor stores b.bias: it holds only a: load it into those modules alone",
    ) as err:
        tying.load(m, path)
    assert "tying.load(torch.nn.ModuleDict({'a': model.get_submodule('a')}), path)" in str(
        err.value
    )
    tying.load(nn.ModuleDict({"a": m.get_submodule("a")}), path)  # the advice, followed
    assert torch.equal(m["b"].weight, m["a"].weight)
