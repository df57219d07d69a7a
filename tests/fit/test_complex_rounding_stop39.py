"""A model with rounding-level imaginary parts (an FFT convolution) is told so (stop 39).

``np.fft.ifft(...)`` of a real convolution returns complex values with ~1e-17 imaginary
rounding; the refusal told the user to keep the model "in its real domain (bounds=,
np.sqrt instead of np.emath.sqrt)", which is not the cause. It now names the ratio and
the fix (return the real part), and the real part fits as lmfit fits it.
"""

import numpy as np
import pytest

import tying.fit

X = np.linspace(-5, 5, 64)
KERNEL = np.fft.fft(np.fft.ifftshift(np.exp(-0.5 * (X / 0.7) ** 2) / 1.7547))
Y = np.fft.ifft(np.fft.fft(2.0 * np.exp(-0.5 * ((X - 0.3) / 0.8) ** 2)) * KERNEL).real
Y = Y + np.random.default_rng(39).normal(0, 0.02, X.size)
KW = dict(shared=["a", "c", "w"], init={"a": 1.0, "c": 0.0, "w": 1.0})


def blurred(x, a, c, w):
    return np.fft.ifft(np.fft.fft(a * np.exp(-0.5 * ((x - c) / w) ** 2), axis=-1) * KERNEL, axis=-1)


def test_fft_rounding_is_named_with_its_fix():
    with pytest.raises(ValueError, match=r"rounding, as np\.fft leaves; return the real part"):
        tying.fit.GlobalFit(blurred, [(X, Y, 0.02)], **KW).run()


def test_a_model_outside_its_real_domain_gets_no_rounding_hint():
    def sqrt_model(x, a, c, w):
        return a * np.emath.sqrt(x - c) + 0 * w

    with pytest.raises(ValueError, match="non-zero imaginary part") as err:
        tying.fit.GlobalFit(sqrt_model, [(X, Y, 0.02)], **KW).run()
    assert "rounding" not in str(err.value)


def test_the_real_part_fits_as_lmfit_does():
    lmfit = pytest.importorskip("lmfit")

    def real_part(x, a, c, w):
        return blurred(x, a, c, w).real

    res = tying.fit.GlobalFit(real_part, [(X, Y, 0.02)], **KW).run()
    out = lmfit.Model(real_part).fit(Y, x=X, a=1.0, c=0.0, w=1.0, weights=np.full(X.size, 50.0))
    for name in "acw":
        assert res.values[name] == pytest.approx(out.params[name].value, rel=1e-6)
        assert res.stderr[name] == pytest.approx(out.params[name].stderr, rel=1e-4)
