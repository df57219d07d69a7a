"""Fixtures for experiment tests: temporary registrations that are removed afterwards."""

from __future__ import annotations

import pytest

import tying.experiments.claims as claims_module
from tying.experiments import REGISTRY, load_all
from tying.experiments.claims import Claim


@pytest.fixture
def temp_experiment(monkeypatch):
    """Register throw-away experiments under a temporary claim row; both go when the test ends."""
    load_all()
    added: list[str] = []

    def register(exp_id: str, fn, **kwargs):
        from tying.experiments.registry import experiment

        row = Claim(
            code="",
            id=exp_id,
            section="test",
            chapters=("003",),
            chapter="003",
            title=exp_id,
            claim=f"{exp_id} claims something.",
            shows="",
        )
        monkeypatch.setitem(claims_module._BY_ID, exp_id, row)
        experiment(exp_id, **kwargs)(fn)
        added.append(exp_id)
        return fn

    yield register
    for exp_id in added:
        REGISTRY.pop(exp_id, None)
