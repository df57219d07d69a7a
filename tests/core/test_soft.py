import pytest
import torch

import tying


def test_penalty_value_and_gradient():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([0.0, 0.0], requires_grad=True)
    c = torch.tensor([1.0, 0.0], requires_grad=True)
    pen = tying.soft.laplacian_penalty({"a": a, "b": b, "c": c}, [("a", "b"), ("b", "c")], lam=3.0)
    assert pen.item() == pytest.approx(1.5 * (5 + 1))
    pen.backward()
    torch.testing.assert_close(a.grad, 3.0 * (a - b).detach())  # lam * Laplacian row
    torch.testing.assert_close(b.grad, 3.0 * ((b - a) + (b - c)).detach())


def test_large_lambda_drives_parameters_together():
    torch.manual_seed(0)
    ps = [torch.randn(3, requires_grad=True) for _ in range(3)]
    targets = [torch.full((3,), float(i)) for i in range(3)]
    opt = torch.optim.SGD(ps, lr=0.01)
    for _ in range(2000):
        opt.zero_grad()
        loss = sum((p - t).pow(2).sum() for p, t in zip(ps, targets))
        (loss + tying.soft.laplacian_penalty(ps, [(0, 1), (1, 2)], lam=50.0)).backward()
        opt.step()
    spread = max(float((ps[i] - ps[j]).detach().abs().max()) for i in range(3) for j in range(3))
    assert spread < 0.1


def test_errors():
    with pytest.raises(ValueError, match="lam must be finite and >= 0"):
        tying.soft.laplacian_penalty([torch.zeros(1)], [], lam=-1)
    with pytest.raises(ValueError, match=r"names 5, which is not in params"):
        tying.soft.laplacian_penalty([torch.zeros(1)], [(0, 5)], lam=1)
    with pytest.raises(ValueError, match=r"has shape \(1,\) but params\[1\] has \(2,\)"):
        tying.soft.laplacian_penalty([torch.zeros(1), torch.zeros(2)], [(0, 1)], lam=1)


@pytest.mark.parametrize("lam", [float("nan"), float("inf"), -1.0, torch.tensor(float("nan"))])
def test_laplacian_penalty_refuses_a_strength_that_is_not_finite_and_non_negative(lam):
    """Stop 26 (nn review): lam=nan gave a NaN penalty, and so NaN gradients, silently."""
    with pytest.raises(ValueError, match="lam must be finite"):
        tying.soft.laplacian_penalty([torch.zeros(2), torch.ones(2)], [(0, 1)], lam=lam)


def test_complex_members_count_the_squared_modulus_never_a_negative_penalty():
    # (a - b)² for a = 1j, b = 0 is -1: a "penalty" that rewarded the gap
    a = torch.tensor([1j, 3 + 4j], dtype=torch.complex128, requires_grad=True)
    b = torch.zeros(2, dtype=torch.complex128)
    pen = tying.soft.laplacian_penalty([a, b], [(0, 1)], lam=2.0)
    assert not pen.is_complex() and pen.item() == pytest.approx(1 + 25)
    pen.backward()  # torch's convention for a real loss of z: the gradient is 2z here
    torch.testing.assert_close(a.grad, 2 * a.detach())
    real = tying.soft.laplacian_penalty(
        [torch.view_as_real(a.detach()), torch.zeros(2, 2, dtype=torch.float64)], [(0, 1)], 2.0
    )
    assert pen.item() == pytest.approx(real.item())


@pytest.mark.parametrize("edge", [(0, 1, 2), (0,), "01", 3])
def test_an_edge_that_is_not_a_pair_is_named(edge):
    params = [torch.zeros(2), torch.ones(2), torch.ones(2)]
    with pytest.raises(ValueError, match=r"each edge must be a pair \(i, j\).*got"):
        tying.soft.laplacian_penalty(params, [(0, 1), edge], lam=1.0)


@pytest.mark.parametrize("lam", [True, "1.0", None])
def test_a_strength_that_is_not_a_real_number_is_refused(lam):
    """Stop 32: lam=True was taken as 1; a string or None failed inside a comparison."""
    with pytest.raises(TypeError, match=r"lam must be a real number .* got (bool|str|NoneType)"):
        tying.soft.laplacian_penalty([torch.zeros(2), torch.ones(2)], [(0, 1)], lam=lam)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int64])
def test_integer_members_are_refused_not_overflowed(dtype):
    """Stop 32: int32 members 60000 apart gave a penalty of -347483648 (the square wrapped)."""
    a, b = torch.tensor([60], dtype=dtype), torch.tensor([0], dtype=dtype)
    with pytest.raises(TypeError, match=rf"params\[0\] is {dtype}.*convert it with \.float\(\)"):
        tying.soft.laplacian_penalty([a, b], [(0, 1)], lam=1.0)


def test_a_parameter_dict_is_keyed_by_its_names():
    """Stop 32: an nn.ParameterDict was indexed 0, 1, ... and its names were 'not in params'."""
    torch.manual_seed(0)
    ps = {name: torch.nn.Parameter(torch.randn(3)) for name in ("t0", "t1", "t2")}
    edges = [("t0", "t1"), ("t1", "t2")]
    got = tying.soft.laplacian_penalty(torch.nn.ParameterDict(ps), edges, lam=0.7)
    want = 0.35 * sum(float((ps[i] - ps[j]).detach().pow(2).sum()) for i, j in edges)
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert torch.equal(got, tying.soft.laplacian_penalty(ps, edges, lam=0.7))


def test_a_bool_is_no_index_of_a_list_of_members():
    """Stop 32: the edge (True, 0) silently meant (1, 0)."""
    with pytest.raises(ValueError, match=r"edge \(True, 0\) names True, which is not an index"):
        tying.soft.laplacian_penalty([torch.zeros(2), torch.ones(2)], [(True, 0)], lam=1.0)
