import pytest
import torch
from torch import nn

import tying


@pytest.mark.parametrize(
    "module,expected",
    [
        (nn.Linear(7, 3), 7),
        (nn.Conv2d(3, 16, 3), 27),
        (nn.Conv2d(8, 8, (3, 5), groups=4), 2 * 15),
        (nn.Conv1d(4, 2, 9), 36),
        (nn.ConvTranspose2d(6, 4, 3), 54),
        (nn.RNN(10, 20), 30),
        (nn.GRUCell(5, 7), 12),
        (nn.Embedding(100, 8), 1),
    ],
)
def test_fan_in_counts_one_output_unit(module, expected):
    assert tying.fan_in(module) == expected


def test_fan_in_unknown_module_names_supported_types():
    with pytest.raises(TypeError, match="ReLU has no weight to count; supported: Linear"):
        tying.fan_in(nn.ReLU())


def test_accidental_ties_found_after_constant_init_and_training():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1))
    for p in net.parameters():
        nn.init.constant_(p, 0.3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(20):
        opt.zero_grad()
        (net(x) - y).pow(2).mean().backward()
        opt.step()
    # identical in exact arithmetic; SIMD summation order may differ in the last bit
    found = tying.find_accidental_ties(net, atol=1e-6)
    assert [(t.path, t.units) for t in found] == [("0", tuple(range(6))), ("2", tuple(range(6)))]


def test_no_accidental_ties_after_random_init_and_partial_groups():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    assert tying.find_accidental_ties(net) == []
    with torch.no_grad():
        net[0].weight[3] = net[0].weight[1]
        net[0].bias[3] = net[0].bias[1]
    assert tying.find_accidental_ties(net) == []  # outgoing columns still differ
    with torch.no_grad():
        net[2].weight[:, 3] = net[2].weight[:, 1]
    assert tying.find_accidental_ties(net) == [tying.AccidentalTie("0", (1, 3), "2")]
    with torch.no_grad():
        net[2].weight[:, 3] += 1e-4
    assert tying.find_accidental_ties(net, atol=1e-3) == [tying.AccidentalTie("0", (1, 3), "2")]


def test_fan_in_of_an_lstm_with_projections_counts_the_projection():
    """Stop 32: the gates of an LSTM with proj_size read the projected output (weight_hh
    is (4h, proj_size)); fan_in said input_size + hidden_size (30, not 15)."""
    lstm = nn.LSTM(10, 20, proj_size=5)
    assert tying.fan_in(lstm) == 15 == lstm.weight_ih_l0.shape[1] + lstm.weight_hh_l0.shape[1]


def test_fan_in_of_a_stacked_rnn_is_one_number_only_when_every_layer_has_it():
    assert tying.fan_in(nn.GRU(40, 20, num_layers=3, bidirectional=True)) == 60
    lstm = nn.LSTM(10, 20, num_layers=2, bidirectional=True)  # layer 1 reads 40 + 20
    assert lstm.weight_ih_l1.shape[1] + lstm.weight_hh_l1.shape[1] == 60
    with pytest.raises(ValueError, match=r"LSTM has 2 layers whose fan-ins differ: 30 .* 60"):
        tying.fan_in(lstm)


@pytest.mark.parametrize("lazy", [nn.LazyLinear(4), nn.LazyConv2d(4, 3)], ids=["linear", "conv"])
def test_fan_in_of_a_lazy_layer_before_its_first_forward_is_refused(lazy):
    with pytest.raises(ValueError, match="has not seen an input yet"):
        tying.fan_in(lazy)  # it returned 0: an infinite 1/sqrt(fan_in) bound
    lazy(torch.randn(1, 3, 5, 5) if isinstance(lazy, nn.LazyConv2d) else torch.randn(2, 3))
    assert tying.fan_in(lazy) == (27 if isinstance(lazy, nn.Conv2d) else 3)


def test_accidental_ties_compare_complex_weights_with_their_imaginary_parts():
    """Stop 32: a cast to float64 dropped the imaginary parts, so units that differ only
    there were reported as an accidental tie."""
    layer = nn.Linear(3, 2, dtype=torch.complex64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1 + 1j, 2, 3], [1 - 1j, 2, 3]]))
        layer.bias.zero_()
    assert tying.find_accidental_ties(nn.Sequential(layer)) == []
    with torch.no_grad():
        layer.weight[1, 0] = 1 + 1j
    assert tying.find_accidental_ties(nn.Sequential(layer)) == [tying.AccidentalTie("0", (0, 1))]


@pytest.mark.parametrize(
    "atol, error, match",
    [
        (-1e-6, ValueError, "atol must be >= 0, got -1e-06"),
        (float("nan"), ValueError, "atol must be >= 0, got nan"),
        (True, TypeError, "atol must be a real number, got bool True"),
        ("0.1", TypeError, "atol must be a real number, got str '0.1'"),
    ],
)
def test_accidental_ties_refuse_a_tolerance_that_matches_nothing(atol, error, match):
    net = nn.Sequential(nn.Linear(3, 4))
    nn.init.constant_(net[0].weight, 0.5)  # four identical units
    with pytest.raises(error, match=match):
        tying.find_accidental_ties(net, atol=atol)  # negative/NaN said "no ties", silently


def test_accidental_ties_of_a_meta_model_are_refused_by_name():
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"0 \(or the layer after it\) is on the meta device"):
        tying.find_accidental_ties(net)


def _symmetric_net():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    for p in net.parameters():
        nn.init.constant_(p, 0.5)  # four identical hidden units
    return net


@pytest.mark.filterwarnings(  # torch.ao.quantization's notices
    "ignore::DeprecationWarning", "ignore:.*quantize_per_tensor"
)
def test_accidental_ties_of_a_quantized_model_are_found_in_its_dequantized_weights():
    """Stop 33: torch.ao's quantized Linear is no nn.Linear, so a quantized model was scanned
    as having no layers: no ties, silently, where every unit was identical."""
    want = [tying.AccidentalTie("0", (0, 1, 2, 3), "2")]
    assert tying.find_accidental_ties(_symmetric_net()) == want
    dynamic = torch.ao.quantization.quantize_dynamic(_symmetric_net(), {nn.Linear}, torch.qint8)
    assert tying.find_accidental_ties(dynamic) == want
    with torch.no_grad():  # one unit apart: found apart in the quantized model too
        net = _symmetric_net()
        net[0].weight[1, 0] = -0.5
    dynamic = torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, torch.qint8)
    assert tying.find_accidental_ties(dynamic) == [tying.AccidentalTie("0", (0, 2, 3), "2")]
    conv = torch.ao.nn.quantized.Conv2d(1, 3, 2)  # a static quantized conv
    w = torch.quantize_per_tensor(torch.full((3, 1, 2, 2), 0.25), 0.05, 0, torch.qint8)
    conv.set_weight_bias(w, torch.zeros(3))
    assert tying.find_accidental_ties(nn.Sequential(conv)) == [tying.AccidentalTie("0", (0, 1, 2))]


@pytest.mark.parametrize(
    "net, match",
    [
        (nn.Sequential(nn.LazyLinear(4), nn.Linear(4, 2)), r"0\.weight is uninitialized \(a lazy "),
        (
            nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).requires_grad_(False),
            r"1\.weight is a torch\.sparse_coo tensor",
        ),
    ],
    ids=["lazy", "sparse"],
)
def test_accidental_ties_name_a_layer_without_dense_values(net, match):
    if not isinstance(net[0], nn.LazyLinear):
        net[1].weight = nn.Parameter(torch.eye(2, 4).to_sparse())
    with pytest.raises(ValueError, match=match):  # torch's own errors named no layer
        tying.find_accidental_ties(net)


# -- stop 35 (second round) -----------------------------------------------------------------


def test_accidental_ties_keep_the_groups_of_a_grouped_conv_apart():
    """Units in different groups read different input channels: a depthwise conv whose
    channels all start as one kernel trains them apart, but was reported as one tie."""
    torch.manual_seed(0)
    depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    nn.init.dirac_(depthwise.weight, groups=4)
    nn.init.zeros_(depthwise.bias)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), depthwise)
    assert tying.find_accidental_ties(net) == []
    net(torch.randn(2, 3, 8, 8)).pow(2).sum().backward()  # and training tells them apart:
    assert depthwise.weight.grad[:, 0, 1, 1].unique().numel() == 4
    grouped = nn.Conv2d(4, 4, 1, groups=2)
    nn.init.constant_(grouped.weight, 0.5)
    nn.init.zeros_(grouped.bias)
    want = [tying.AccidentalTie("1", (0, 1)), tying.AccidentalTie("1", (2, 3))]
    assert tying.find_accidental_ties(nn.Sequential(nn.Conv2d(3, 4, 1), grouped)) == want


def test_accidental_ties_find_identical_units_with_infinite_weights():
    layer = nn.Linear(3, 3)
    with torch.no_grad():
        layer.weight[1] = layer.weight[0] = torch.tensor([float("inf"), 1.0, -2.0])
        layer.bias[1] = layer.bias[0]
    want = [tying.AccidentalTie("0", (0, 1))]
    assert tying.find_accidental_ties(nn.Sequential(layer)) == want  # inf - inf is nan: missed
    assert tying.find_accidental_ties(nn.Sequential(layer), atol=1e-3) == want


@pytest.mark.parametrize("which", ["0.weight", "0.bias", "1.weight"])
def test_accidental_ties_refuse_nan_weights_by_name(which):
    """A NaN equals nothing, so a diverged model scanned as "no accidental ties"."""
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    for p in net.parameters():
        nn.init.constant_(p, 0.5)
    with torch.no_grad():
        net.get_parameter(which.replace("1.", "2."))[0].fill_(float("nan"))
    name = which.replace("1.", "2.")
    with pytest.raises(ValueError, match=rf"{name}.* has \d+ NaN entries, so its units cannot"):
        tying.find_accidental_ties(net)


def test_fan_in_of_layers_whose_weight_is_not_out_by_in():
    """weight[0].numel() is the fan-in only of an (out, in, ...) weight: an EmbeddingBag
    (num_embeddings, dim) gave dim, GPT-2's Conv1D (in, out) gave its output width."""
    assert tying.fan_in(nn.EmbeddingBag(100, 8)) == tying.fan_in(nn.Embedding(100, 8)) == 1
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    assert tying.fan_in(pytorch_utils.Conv1D(nf=12, nx=5)) == 5  # was 12


# torch 2.13 warns (once a process) that quantized tensor creation is deprecated: the
# test passed or failed with which test of the process built a quantized layer first
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_fan_in_of_quantized_layers_is_their_float_layers():
    q = torch.ao.nn.quantized
    assert tying.fan_in(q.Linear(5, 7)) == tying.fan_in(q.dynamic.Linear(5, 7)) == 5
    assert tying.fan_in(q.Conv2d(4, 6, 3, groups=2)) == tying.fan_in(nn.Conv2d(4, 6, 3, groups=2))
