"""Small problems shared by the fit tests."""

from __future__ import annotations

import numpy as np
import torch


def gauss(x, center, width, amplitude):
    """A Gaussian peak (NumPy: Jacobian by finite differences)."""
    return amplitude * np.exp(-0.5 * ((x - center) / width) ** 2)


def gauss_torch(x, center, width, amplitude):
    """The same peak in torch (Jacobian by autograd)."""
    return amplitude * torch.exp(-0.5 * ((x - center) / width) ** 2)


def peaks(k: int = 6, n: int = 60, seed: int = 0, noise: float = 0.02, lengths=None):
    """K Gaussian peaks with shared center 0.3 and width 0.7, amplitudes 1..3."""
    rng = np.random.default_rng(seed)
    amps = rng.uniform(1.0, 3.0, k)
    out = []
    for i, a in enumerate(amps):
        m = n if lengths is None else lengths[i]
        x = np.linspace(-3, 3, m)
        y = gauss(x, 0.3, 0.7, a) + rng.normal(0, noise, m)
        out.append((x, y, noise))
    return out, amps


INIT = {"center": 0.0, "width": 1.0, "amplitude": 1.0}
