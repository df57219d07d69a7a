"""Suite-wide test settings.

Tests marked ``slow`` run experiments at report size; under CI (CI=true) they
are skipped, and CI runs the same checks at quick size instead.
"""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("TYING_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    skip = pytest.mark.skip(reason="slow (report-size) test; CI runs the quick size")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
