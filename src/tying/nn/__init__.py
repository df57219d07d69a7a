"""Layers whose sharing is the design (and their untied baselines)."""

from tying.nn.locally_connected import LocallyConnected2d

__all__ = ["LocallyConnected2d"]
