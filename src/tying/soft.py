"""Soft ties (``tying.soft.laplacian_penalty``); see :mod:`tying.core.soft`."""

from tying.core.soft import laplacian_penalty

__all__ = ["laplacian_penalty"]
