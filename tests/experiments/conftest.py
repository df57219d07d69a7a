"""Fixtures for experiment tests: temporary registrations that are removed afterwards."""

from __future__ import annotations

import pytest

from tying.experiments import REGISTRY, load_all


@pytest.fixture
def temp_experiment():
    """Register throw-away experiments; they leave the registry when the test ends."""
    load_all()
    added: list[str] = []

    def register(exp_id: str, fn, **kwargs):
        from tying.experiments.registry import experiment

        kwargs.setdefault("title", exp_id)
        kwargs.setdefault("claim", f"{exp_id} claims something.")
        kwargs.setdefault("seed_file", "003")
        experiment(exp_id, **kwargs)(fn)
        added.append(exp_id)
        return fn

    yield register
    for exp_id in added:
        REGISTRY.pop(exp_id, None)
