"""An input of another dtype or device is refused naming the layer, expected vs got, and the
fix (stop 35); torch's own error is the cause, and other errors pass through unchanged."""

import re
import warnings

import pytest
import torch
from torch import nn

from tying.nn import (
    Attention,
    GroupConv2d,
    HashedEmbedding,
    HashedEmbeddingBag,
    HashedLinear,
    LiftingConv2d,
    LocallyConnected2d,
    MultiHopGraphConv,
    NeuralODE,
    SharedBoundary,
    Siamese,
    Stack,
    SymmetricConv1d,
    TiedAutoencoder,
    TiedGateLSTM,
    TiedResidualNet,
    TiedUNet,
    TransformerBlock,
    VectorField,
    normalized_adjacency,
)
from tying.nn._input_errors import InputDeviceError, InputDtypeError


def _adj():
    return normalized_adjacency(torch.tensor([[0, 1, 2], [1, 2, 3]]), 5)


# name in the message, layer (float32), data inputs (float), other arguments
LAYERS = {
    "LiftingConv2d": (lambda: LiftingConv2d(2, 3, 3), lambda: [torch.randn(2, 2, 8, 8)]),
    "LiftingConv2d-winograd": (
        lambda: LiftingConv2d(2, 3, 3, algorithm="winograd"),
        lambda: [torch.randn(2, 2, 8, 8)],
    ),
    "GroupConv2d": (lambda: GroupConv2d(2, 3, 3), lambda: [torch.randn(2, 2, 4, 8, 8)]),
    "GroupConv2d-untied-D4": (
        lambda: GroupConv2d(2, 3, 3, group="D4", tied=False),
        lambda: [torch.randn(2, 2, 8, 8, 8)],
    ),
    "GroupConv2d-winograd": (
        lambda: GroupConv2d(2, 3, 3, algorithm="winograd"),
        lambda: [torch.randn(2, 2, 4, 8, 8)],
    ),
    "HashedLinear": (lambda: HashedLinear(6, 5, 11), lambda: [torch.randn(3, 6)]),
    "Attention": (lambda: Attention(8, 2, kv_heads=1), lambda: [torch.randn(2, 5, 8)]),
    "MultiHopGraphConv": (lambda: MultiHopGraphConv(4, 3), lambda: [torch.randn(5, 4)]),
    "LocallyConnected2d": (
        lambda: LocallyConnected2d(2, 3, 6, 3),
        lambda: [torch.randn(2, 2, 6, 6)],
    ),
    "TiedGateLSTM": (lambda: TiedGateLSTM(4, 5), lambda: [torch.randn(2, 3, 4)]),
    "TransformerBlock": (lambda: TransformerBlock(8, 2), lambda: [torch.randn(2, 5, 8)]),
    "Stack": (
        lambda: Stack([TransformerBlock(8, 2) for _ in range(2)]),
        lambda: [torch.randn(2, 5, 8)],
    ),
    "Siamese": (
        lambda: Siamese(nn.Sequential(nn.Linear(4, 3))),
        lambda: [torch.randn(2, 4), torch.randn(2, 4)],
    ),
    "TiedUNet": (lambda: TiedUNet(1, 2, (4, 8)), lambda: [torch.randn(1, 1, 8, 8)]),
    "VectorField": (lambda: VectorField(3, 4), lambda: [torch.randn(2, 3)]),
    "TiedResidualNet": (lambda: TiedResidualNet(3, 4, 3), lambda: [torch.randn(2, 3)]),
    "NeuralODE": (
        lambda: NeuralODE(VectorField(3, 4), method="rk4", steps=4),
        lambda: [torch.randn(2, 3)],
    ),
    "SymmetricConv1d": (lambda: SymmetricConv1d(2, 3, 5), lambda: [torch.randn(2, 2, 9)]),
    "TiedAutoencoder": (lambda: TiedAutoencoder(6, 3), lambda: [torch.randn(2, 6)]),
}
EXTRA = {"MultiHopGraphConv": _adj}  # arguments after the data inputs
ARG = {"Siamese": "a"}  # the first data input's name, where it is not x

CASES = {
    # case: (layer dtype, data-input dtype)
    "float64 input": (torch.float32, torch.float64),
    "int input": (torch.float32, torch.int64),
    "half layer": (torch.float16, torch.float32),
    "bfloat16 layer": (torch.bfloat16, torch.float32),
}


def _call(layer, inputs, name):
    extra = EXTRA.get(name.split("-")[0])
    if extra is not None:
        adj = extra()
        inputs = [*inputs, adj.to(inputs[0].dtype) if inputs[0].is_floating_point() else adj]
    out = layer(*inputs)
    return out[0] if isinstance(out, tuple) else out  # (output, state), (za, zb): the first


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(LAYERS))
def test_a_dtype_mismatch_names_the_layer_expected_got_and_the_fix(name, case):
    layer_dtype, input_dtype = CASES[case]
    make_layer, make_inputs = LAYERS[name]
    torch.manual_seed(0)
    layer, inputs = make_layer(), make_inputs()
    with torch.no_grad():
        before = _call(layer, inputs, name)  # the layer's answer before a refused call
    layer = layer.to(layer_dtype)
    state = [v.clone() for v in layer.state_dict().values()]
    if case == "int input":
        bad = [(x * 3).to(input_dtype) for x in inputs]
    else:
        bad = [x.to(input_dtype) for x in inputs]
    head = name.split("-")[0]
    arg = ARG.get(head, "x")
    if case == "int input":
        fix = f"a float layer reads floats: pass {arg}.to({layer_dtype})"
    else:
        fix = f"pass {arg}.to({layer_dtype}) or convert the layer with layer.to({input_dtype})"
    label = "the input" if arg == "x" else f"the input {arg}"
    with pytest.raises(
        TypeError,
        match=rf"^{head}( \(at \.[\w.]+, a \w+\))?: {label} is {input_dtype} but the layer's "
        rf"parameters are {layer_dtype}; {re.escape(fix)}( \(torch: |, and Â in the same dtype$)",
    ) as info:
        _call(layer, bad, name)
    assert isinstance(info.value, InputDtypeError)
    if "(torch: " in str(info.value):  # torch's error is kept as the cause
        assert isinstance(info.value.__cause__, (RuntimeError, ValueError, NotImplementedError))
    # the refused call changed nothing: the same state, and the same answer, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(state, layer.state_dict().values(), strict=True))
    if layer_dtype == torch.float32:
        with torch.no_grad():
            assert torch.equal(_call(layer, inputs, name), before)


# a conv of a meta weight and a CPU input is meta, as in torch (shape inference): not refused
NO_DEVICE_ERROR = ("TiedUNet", "SymmetricConv1d", "TiedAutoencoder", "LocallyConnected2d")
DEVICE_LAYERS = [n for n in LAYERS if n not in NO_DEVICE_ERROR]
DEVICE_LAYERS = [n for n in DEVICE_LAYERS if not n.startswith(("LiftingConv2d", "GroupConv2d"))]


@pytest.mark.parametrize("name", [*DEVICE_LAYERS, "GroupConv2d-winograd"])
def test_an_input_on_another_device_names_the_layer_and_the_fix(name):
    # a layer moved to the meta device stands for one on another device (no GPU here):
    # torch's "Tensor on device meta is not on the expected device cpu!" named no layer
    make_layer, make_inputs = LAYERS[name]
    layer, inputs = make_layer().to("meta"), make_inputs()
    if name == "MultiHopGraphConv":
        inputs = [*inputs, _adj().to("meta")]
    head = name.split("-")[0]
    arg = ARG.get(head, "x")
    label = "the input" if arg == "x" else f"the input {arg}"
    with pytest.raises(
        ValueError,
        match=rf"^{head}( \(at \.[\w.]+, a \w+\))?: {label} is on cpu but the layer's "
        rf"parameters are on meta; move one to the other: {arg}.to\('meta'\) or "
        r"layer.to\('cpu'\)",
    ) as info:
        layer(*inputs)
    assert isinstance(info.value, InputDeviceError)


@pytest.mark.parametrize("bag", [False, True])
def test_ids_on_another_device_than_a_hashed_table_are_named(bag):
    layer = (HashedEmbeddingBag if bag else HashedEmbedding)(20, 4, 13).to("meta")
    name = "HashedEmbeddingBag" if bag else "HashedEmbedding"
    with pytest.raises(ValueError, match=rf"^{name}: the input is on cpu but .* on meta"):
        layer(torch.randint(0, 20, (3, 4)))


def test_a_meta_input_to_a_locally_connected_layer_is_refused_not_read_as_memory():
    # torch.einsum of a meta and a CPU tensor returned a CPU tensor of uninitialised memory:
    # the layer answered a meta batch with numbers (nn.Conv2d returns meta)
    layer = LocallyConnected2d(2, 3, 6, 3)
    with pytest.raises(
        ValueError, match=r"^LocallyConnected2d: the input is on meta but .* on cpu; move one"
    ):
        layer(torch.randn(2, 2, 6, 6, device="meta"))
    # a meta layer still maps a meta batch to its meta output (shape inference)
    assert layer.to("meta")(torch.randn(2, 2, 6, 6, device="meta")).shape == (2, 3, 4, 4)


def test_a_mismatch_inside_a_stack_names_the_path_of_the_module_that_clashed():
    torch.manual_seed(0)
    stack = Stack([TransformerBlock(8, 2) for _ in range(3)])
    stack.layers[1].half()  # one block converted by hand, the others left float32
    with pytest.raises(
        TypeError,
        match=r"^Stack \(at \.layers\.1\.norm1, a LayerNorm\): the input is torch\.float32 but "
        r"the layer's parameters are torch\.float16",
    ):
        stack(torch.randn(2, 5, 8))


def test_a_mismatch_in_a_hop_when_the_adjacency_also_differs_names_the_layers_dtype():
    # the features and Â both float64, the layer float32; and Â float32 with float64
    # features: the message said to make Â float64, which then failed inside the layer
    layer = MultiHopGraphConv(4, 3)
    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(
        TypeError,
        match=r"^MultiHopGraphConv: the input is torch\.float64 but the layer's parameters are "
        r"torch\.float32; pass x\.to\(torch\.float32\)",
    ):
        layer(x, _adj())


def test_under_autocast_the_fix_is_to_keep_the_parameters_float32():
    block = TransformerBlock(8, 2).half()
    with (
        torch.autocast("cpu", dtype=torch.float16),
        pytest.raises(TypeError, match=r"under autocast keep the parameters float32"),
    ):
        block(torch.randn(2, 5, 8))
    with torch.autocast("cpu", dtype=torch.float16):
        assert block.float()(torch.randn(2, 5, 8)).dtype == torch.float32


def test_an_error_with_no_dtype_or_device_clash_passes_through_unchanged():
    # a tower of mismatched widths: torch's shape error, not a dtype or device one
    siamese = Siamese(nn.Sequential(nn.Linear(4, 5), nn.Linear(4, 3)))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        siamese(torch.randn(2, 4), torch.randn(2, 4))

    class Fails(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            raise RuntimeError("a tower's own failure")

    boom = Siamese(Fails())
    with pytest.raises(RuntimeError, match="^a tower's own failure$") as info:
        boom(torch.randn(2, 4, dtype=torch.float32), torch.randn(2, 4))
    assert not isinstance(info.value, (InputDtypeError, InputDeviceError))


def test_a_shared_boundary_names_a_time_input_of_another_dtype():
    boundary = SharedBoundary(2, 1.0)
    with pytest.raises(TypeError, match=r"^SharedBoundary \(at \.g\.0, a Linear\): the input"):
        boundary.boundary(torch.randn(5, 1, dtype=torch.float64))


@pytest.mark.parametrize("name", ["GroupConv2d", "GroupConv2d-winograd", "HashedLinear", "Stack"])
def test_a_layer_moved_to_float64_matches_one_built_in_float64(name):
    # controls (these passed before): .to(float64) leaves no float32 state behind
    make_layer, make_inputs = LAYERS[name]
    torch.manual_seed(0)
    layer = make_layer()
    inputs = [x.double() for x in make_inputs()]
    with torch.no_grad():
        _call(layer, [x.float() for x in inputs], name)  # warm any cache in float32
        layer.eval()
        _call(layer, [x.float() for x in inputs], name)
    moved = layer.to(torch.float64)
    fresh = make_layer().double().eval()
    fresh.load_state_dict(moved.state_dict())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(_call(moved, inputs, name), _call(fresh, inputs, name))


def test_a_state_or_mask_of_another_dtype_is_named_by_its_argument():
    lstm = TiedGateLSTM(4, 5)
    h0 = torch.zeros(2, 5, dtype=torch.float64)
    with pytest.raises(
        TypeError,
        match=r"^TiedGateLSTM: the input h0 is torch\.float64 but the layer's parameters are "
        r"torch\.float32; pass h0\.to\(torch\.float32\)",
    ):
        lstm(torch.randn(2, 3, 4), (h0, h0.clone()))
    # an additive mask of another dtype: SDPA's "Expected attn_mask dtype to be bool or float
    # or to match query dtype" named no layer
    attention = Attention(8, 2)
    mask = torch.zeros(5, 5, dtype=torch.float64)
    with pytest.raises(
        TypeError,
        match=r"^Attention: an additive \(float\) attn_mask must have the queries' dtype "
        r"torch\.float32, got torch\.float64; pass attn_mask\.to\(torch\.float32\)",
    ):
        attention(torch.randn(2, 5, 8), attn_mask=mask)
    assert torch.equal(
        attention(
            torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0)), attn_mask=mask.float()
        ),
        attention(torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))),
    )
