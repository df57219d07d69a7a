"""docs/coming-from.md rows (and the README tour) whose figures could go stale silently.

The rows for ``nn.MultiheadAttention`` (layout default, bool ``attn_mask`` meaning), for
pint's quantity ``==`` and for GMMHMM's M-step state figures and a recipe a user follows
literally when porting; the stop-59 audit found the GMMHMM figures unreproducible (no
input stated) and restated them on the input below. The README tour's comment states
what ``tying.count`` prints. A change on our side would leave the page wrong without a
failing test.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import torch
from torch import nn

from tying.nn import Attention

E, H, T, B = 16, 4, 5, 3


def _ported() -> tuple[nn.MultiheadAttention, Attention, torch.Tensor, torch.Tensor]:
    """MHA and an Attention with its weights copied as the row says (row blocks)."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H).eval()  # draws in this order give the page's figures
    att = Attention(E, n_heads=H, batch_first=False).eval()
    with torch.no_grad():
        w, b = mha.in_proj_weight, mha.in_proj_bias
        for i, proj in enumerate((att.q_proj, att.k_proj, att.v_proj)):
            proj.weight.copy_(w[i * E : (i + 1) * E])
            proj.bias.copy_(b[i * E : (i + 1) * E])
        att.out_proj.weight.copy_(mha.out_proj.weight)
        att.out_proj.bias.copy_(mha.out_proj.bias)
    x = torch.randn(T, B, E)  # (T, B, E): MHA's default layout
    mask = torch.rand(T, T) < 0.3
    mask.fill_diagonal_(False)  # every query keeps a key on both sides
    return mha, att, x, mask


@torch.no_grad()
def test_multihead_attention_rows_layout_and_bool_mask_as_the_page_says():
    mha, att, x, mask = _ported()
    assert mha.batch_first is False and Attention(E, n_heads=H).batch_first is True
    ref = mha(x, x, x)[0]
    # the recipe: batch_first=False reads MHA's layout
    assert (att(x) - ref).abs().max() < 1e-6
    # without the flag the same (T, B, E) tensor is read as (B, T, E): no error, 0.82 off
    default = Attention(E, n_heads=H).eval()
    default.load_state_dict(att.state_dict())
    assert round(float((default(x) - ref).abs().max()), 2) == 0.82
    # a bool attn_mask means the opposite: True = masked there, True = may attend here
    ref_m = mha(x, x, x, attn_mask=mask)[0]
    assert round(float((att(x, attn_mask=mask) - ref_m).abs().max()), 2) == 1.39
    assert (att(x, attn_mask=~mask) - ref_m).abs().max() < 1e-6  # the row's fix
    # float masks and key_padding_mask mean the same on both sides
    additive = torch.zeros(T, T).masked_fill(mask, float("-inf"))
    assert (att(x, attn_mask=additive) - ref_m).abs().max() < 1e-6
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[0, -2:] = True
    ref_p = mha(x, x, x, key_padding_mask=pad)[0]
    assert (att(x, key_padding_mask=pad) - ref_p).abs().max() < 1e-6


def test_quantity_equality_row_compares_by_value_as_pint_does():
    # pint's side (checked once by hand, openff-units 0.3 / pint 0.25): 1.5 A == 0.15 nm
    # True, the 13th-digit pair False, kilocalorie_per_mole != kilocalorie / mole
    from tying.chem.units import parse_quantity, parse_unit

    ours = parse_quantity("1.5 * angstrom"), parse_quantity("0.15 * nanometer")
    assert (ours[0] == ours[1]) is True
    assert len(set(ours)) == 1  # equal values hash equal
    # the 13th significant digit differs: unequal, as in pint
    near = (
        parse_quantity("1.525970013793 * angstrom"),
        parse_quantity("0.1525970013794 * nanometer"),
    )
    assert (near[0] == near[1]) is False
    # units by their powers here (pint compares their names)
    assert parse_unit("kilocalorie_per_mole") == parse_unit("kilocalorie / mole")


# hmmlearn 0.3.3's one step from START on X (computed once; importing it costs 2 s)
HMMLEARN_ONE_STEP = {
    "means_": [-0.549779382674, 0.688841303258, 2.983288499392, 5.063054894401],
    "transmat_": [0.964627422684, 0.035372577316, 0.032019083279, 0.967980916721],
    "weights_": [0.465805145916, 0.534194854084, 0.547819183221, 0.452180816779],
    "covars_": [0.821, 0.717, 0.826, 1.611],
}


def test_gmmhmm_row_one_em_step_differs_from_hmmlearn_in_covariances_only():
    from tying.hmm import GMMHMM

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (150, 1)), rng.normal(4, 1.5, (150, 1))])
    model = GMMHMM(2, 2, covariance_type="diag", n_iter=1, init_params="", tol=-np.inf)
    model.startprob_ = np.array([0.6, 0.4])
    model.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    model.weights_ = np.full((2, 2), 0.5)
    model.means_ = np.array([[[-1.0], [1.0]], [[3.0], [5.0]]])
    model.covars_ = np.ones((2, 2, 1))
    model.fit(X)
    for name in ("weights_", "means_", "transmat_"):
        np.testing.assert_allclose(
            np.ravel(getattr(model, name)), HMMLEARN_ONE_STEP[name], atol=1e-11
        )
    # the covariances around the new means: the page's figures, not hmmlearn's
    np.testing.assert_allclose(np.ravel(model.covars_), [0.619, 0.620, 0.826, 1.607], atol=5e-4)
    assert np.abs(np.ravel(model.covars_) - HMMLEARN_ONE_STEP["covars_"]).max() > 0.2


def test_readme_tour_prints_the_counts_its_comment_states(tmp_path, monkeypatch, capsys):
    # the tour's comment is the first line of tying.count's table: 6 layers share one fc
    # (1,056 of 6,336), lm_head reads embed (3,200 of 6,400), dec.weight is enc.weight.T
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    tour = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)[0]
    stated = re.search(r"^# (parameters: .*)$", tour, flags=re.M).group(1)
    monkeypatch.chdir(tmp_path)  # the tour saves model.safetensors
    exec(compile(tour, str(readme), "exec"), {})
    assert capsys.readouterr().out.splitlines()[0] == stated
