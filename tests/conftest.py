"""Suite-wide test settings.

Tests marked ``slow`` run experiments at report size; under CI (CI=true) they
are skipped, and CI runs the same checks at quick size instead.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from hypothesis import settings

from tying.core.pools import pool_context

# CI runs every property test on the same derandomised examples, so a run cannot fail
# (or pass) by the luck of the draw; locally each run draws fresh examples, which is
# how the property tests keep finding new cases (set HYPOTHESIS_PROFILE=ci to repeat CI).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if _CI else "dev"))

torch.set_num_threads(int(os.environ.get("TYING_TEST_THREADS", "1")))

# Worker processes (the experiment runner's pools, assign_many's, the two-rank
# distributed tests) fork from one server per test process, which imports torch,
# tying, the experiments and the chem stack once: a spawned process imported them
# itself, ~3-5 s of CPU each, most of the distributed tests' time (stop 57). The
# server is a fresh interpreter, so each process still starts from a clean state.
pool_context(["tying.experiments._worker_preload", "tying.chem.assign", "tying.chem.parallel"])

# torch registers its forward-mode decompositions through torch.jit.script on the first
# forward-AD call of a process, which warns that jit.script is deprecated: the test that
# happens to be first in a worker failed on that warning (4 of them on one xdist run, none
# serially). Registered here, once per process, whatever the order.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import torch._decomp.decompositions_for_jvp  # noqa: F401


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    skip = pytest.mark.skip(reason="slow (report-size) test; CI runs the quick size")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def group():
    """A one-process gloo group (rank 0 of 1) for the tying.distributed tests, destroyed
    after the test. A test file or parametrize that defines its own ``group`` wins."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture
def register(monkeypatch):
    """``register(exp_id, fn, *, title=None, claim=None)``: a temporary experiment (and its
    claim row) for the command-line tests, removed after the test."""
    import tying.experiments.claims as claims_module
    from tying.experiments import REGISTRY, load_all
    from tying.experiments.claims import Claim
    from tying.experiments.registry import experiment

    load_all()
    added = []

    def reg(exp_id, fn, *, title=None, claim=None):
        row = Claim(
            "", exp_id, "test", ("004",), "004", title or exp_id, claim or f"{exp_id} claims.", ""
        )
        monkeypatch.setitem(claims_module._BY_ID, exp_id, row)
        experiment(exp_id)(fn)
        added.append(exp_id)

    yield reg
    for exp_id in added:
        REGISTRY.pop(exp_id, None)
