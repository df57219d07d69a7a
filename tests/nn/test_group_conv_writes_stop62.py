"""A write into a group conv's logical (tied) kernel block is refused at the next forward.

Before stop 62 the forward gathered its bank from the physical blocks and ran on the old
kernel, no error (``nn.init.zeros_(g.kernels.r_e)`` then ``g(x)``: the output unchanged).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tying.core.errors import TieError
from tying.nn import GroupConv2d, LiftingConv2d
from tying.nn._group_conv_writes import READ_FLAG


def _field(layer, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, layer.in_channels, len(layer.elements), 6, 6, generator=g)


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_init_into_a_logical_block_is_refused_at_the_forward(group):
    layer = GroupConv2d(2, 3, 3, group=group)
    x = _field(layer)
    before = layer(x)
    nn.init.zeros_(layer.kernels.r_e)
    with pytest.raises(TieError, match=r"kernels\.r_e was written in place.*write to kernels\.e_"):
        layer(x)
    # the refusal dropped the stale record: the layer runs on its (unchanged) tie again
    assert torch.equal(layer(x), before)
    assert READ_FLAG not in layer.kernels.__dict__


def test_the_advice_works_write_to_the_physical_block():
    layer = GroupConv2d(2, 3, 3, group="C4")
    x = _field(layer)
    before = layer(x)
    nn.init.zeros_(layer.kernels.r_e)
    with pytest.raises(TieError, match=r"write to kernels\.e_r3 instead"):
        layer(x)
    with torch.no_grad():
        layer.kernels.e_r3.zero_()  # what the error says: the physical block
    assert torch.count_nonzero(layer.kernels.r_e) == 0  # the logical block reads it
    assert not torch.equal(layer(x), before)


def test_a_held_block_written_later_is_refused_and_eval_mode_too():
    layer = GroupConv2d(2, 3, 3, group="D4").eval()
    x = _field(layer)
    block = layer.kernels.m_r  # held by a name: still writable after a forward
    with torch.no_grad():
        layer(x)
        assert READ_FLAG in layer.kernels.__dict__  # kept while the value is held
        block.fill_(1.0)
        with pytest.raises(TieError, match=r"kernels\.m_r was written in place"):
            layer(x)


def test_filter_bank_refuses_it_too():
    layer = GroupConv2d(2, 3, 3, group="C4")
    layer.kernels.r2_r.data.copy_(torch.ones(3, 2, 3, 3))
    with pytest.raises(TieError, match=r"kernels\.r2_r was written through \.data"):
        layer.filter_bank()


def test_lifting_conv_block_write_refused():
    layer = LiftingConv2d(1, 2, 3, group="D4")
    x = torch.randn(2, 1, 6, 6)
    nn.init.ones_(layer.kernels.rm)
    with pytest.raises(TieError, match=r"kernels\.rm was written in place"):
        layer(x)


def test_a_read_without_write_costs_one_scan_then_nothing():
    layer = GroupConv2d(2, 3, 3, group="D4")
    x = _field(layer)
    before = layer(x)
    total = layer.kernels.r3_m.detach().sum()  # read, not written, not held
    assert torch.allclose(total, layer.kernels.e_rm.detach().sum())
    assert READ_FLAG in layer.kernels.__dict__
    assert torch.equal(layer(x), before)
    assert READ_FLAG not in layer.kernels.__dict__  # cleared: later forwards skip the scan


def test_prune_on_a_tied_block_still_names_the_tie():
    # the watched slot property calls the slot's value itself, so the core still sees
    # torch.nn.utils.prune as the reader (an extra frame hid it) and names the tie
    import torch.nn.utils.prune as prune

    layer = GroupConv2d(2, 3, 3, group="C4")
    with pytest.raises(TieError, match=r"torch\.nn\.utils\.prune on the tied slot 'kernels\.r_e'"):
        prune.l1_unstructured(layer.kernels, "r_e", amount=0.5)


def test_the_untie_advice_works():
    import tying

    layer = GroupConv2d(2, 3, 3, group="C4")
    x = _field(layer)
    nn.init.zeros_(layer.kernels.r_e)
    with pytest.raises(TieError, match=r"or untie first with tying\.untie\(model\)"):
        layer(x)
    tying.untie(layer)
    nn.init.zeros_(layer.kernels.r_e)  # a parameter now: the write is the layer's
    bank = layer.filter_bank()
    assert torch.count_nonzero(bank[1::4, 0::4]) == 0  # r_e: output orientation r, input e
    layer(x)


def test_a_layer_unpickled_with_a_fresh_bank_class_refuses_too():
    # in a fresh process torch.load makes the tied bank class afresh, its slot reads not
    # yet watched: here the core's class cache is emptied of it to make one the same way
    import io

    from tying.core import slots as core_slots
    from tying.nn import group_conv

    layer = GroupConv2d(2, 3, 3, group="C4")
    x = _field(layer)
    layer(x)
    buf = io.BytesIO()
    torch.save(layer, buf)
    saved = dict(core_slots._CLASSES)
    try:
        for key in [k for k in core_slots._CLASSES if k[0] is group_conv._Bank]:
            del core_slots._CLASSES[key]
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        assert type(loaded.kernels) is not type(layer.kernels)  # a fresh class
        nn.init.zeros_(loaded.kernels.r_e)
        with pytest.raises(TieError, match=r"kernels\.r_e was written in place"):
            loaded(x)
    finally:
        core_slots._CLASSES.clear()
        core_slots._CLASSES.update(saved)


@pytest.mark.parametrize(
    "layer_cls, block, physical", [(GroupConv2d, "rm_r", "e_m"), (LiftingConv2d, "rm", "e")]
)
def test_the_advice_for_a_mirrored_rotation_names_the_physical_block(layer_cls, block, physical):
    # an r^k m block reads an m block, itself tied (a flip of a physical block): "write to
    # kernels.m_e instead", followed, was refused again (stop 62 review)
    layer = layer_cls(2, 3, 3, group="D4")
    x = _field(layer)[:, :, 0] if layer_cls is LiftingConv2d else _field(layer)
    before = layer(x)
    nn.init.zeros_(getattr(layer.kernels, block))
    with pytest.raises(
        TieError, match=rf"write to the physical block kernels\.{physical} instead \("
    ):
        layer(x)
    with torch.no_grad():
        getattr(layer.kernels, physical).zero_()  # what the error says
    assert torch.count_nonzero(getattr(layer.kernels, block)) == 0
    assert not torch.equal(layer(x), before)
