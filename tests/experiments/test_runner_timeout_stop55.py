"""Stop 55: a per-experiment timeout (``run_many(timeout=...)``, ``tying report --timeout``).

A hung experiment kept ``tying report`` waiting until Ctrl-C, and the page of every other
experiment was lost with it. Now an experiment that runs past the timeout is recorded as
an error ("timed out after N s"), its worker process (and only the pool's own workers)
is stopped, and the others go on, with ``jobs=1`` and ``jobs=2``.
"""

from __future__ import annotations

import os
import pathlib
import random
import time

import pytest

import tying.experiments.runner as runner_module
from tying.experiments import REGISTRY
from tying.experiments import claims as claims_module
from tying.experiments.runner import check_timeout, run_many

from . import fake_timeout_stop55 as fakes

MODULE = fakes.__name__


@pytest.fixture
def fake_experiments(monkeypatch):
    """The fakes registered here and in every worker; removed here afterwards."""
    fakes.register()
    monkeypatch.setattr(runner_module, "_WORKER_IMPORTS", (MODULE,))
    yield
    for exp_id in fakes.FAKES:
        REGISTRY.pop(exp_id, None)
        claims_module._BY_ID.pop(exp_id, None)


def _gone(pid: int, within_s: float = 10.0) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting to be reaped counts as ended)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_a_hung_experiment_times_out_and_the_others_go_on_with_two_jobs(fake_experiments):
    seed = random.randrange(10**9)
    fakes.pid_file(seed).unlink(missing_ok=True)
    done = []
    t0 = time.monotonic()
    records = run_many(
        [fakes.HANG, fakes.OK, fakes.OK2],
        size="quick",
        seed=seed,
        jobs=2,
        timeout=1.5,
        on_done=lambda r: done.append(r.id),
    )
    took = time.monotonic() - t0
    hang, ok, ok2 = records
    assert (hang.status, ok.status, ok2.status) == ("error", "pass", "pass")
    assert hang.error.startswith("timed out after 1.5 s (the per-experiment timeout)")
    assert hang.key_figure == "timed out after 1.5 s" and hang.runtime_s == 1.5
    # both others ran in workers, not here; the one beside the hung one was not re-run
    assert {ok.measured["pid"], ok2.measured["pid"]}.isdisjoint({os.getpid()})
    assert sorted(done) == sorted([fakes.HANG, fakes.OK, fakes.OK2])
    # the hung worker was stopped: it does not sleep out its 600 s
    pid = int(fakes.pid_file(seed).read_text())
    fakes.pid_file(seed).unlink()
    assert pid != os.getpid() and _gone(pid)
    assert took < 120


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (0, ValueError, "timeout must be a positive, finite number of seconds, got 0"),
        (-1.0, ValueError, "got -1.0"),
        (float("nan"), ValueError, "got nan"),
        (float("inf"), ValueError, "got inf"),
        (True, TypeError, r"timeout must be a number of seconds or None, got True \(bool\)"),
        ("60", TypeError, r"got '60' \(str\)"),
    ],
)
def test_a_bad_timeout_is_refused_before_anything_runs(bad, error, match, tmp_path):
    with pytest.raises(error, match=match):
        run_many(["param-counts"], timeout=bad, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert check_timeout(2) == 2.0 and check_timeout(None) is None


def test_an_unchanged_deterministic_flag_is_not_set_again(monkeypatch, temp_experiment):
    # torch.use_deterministic_algorithms imports torch._inductor: 2-4 s in a fresh
    # worker after its first experiment, counted against that experiment's timeout
    import torch

    from tying.experiments.registry import Result
    from tying.experiments.runner import run_experiment

    calls = []
    real = torch.use_deterministic_algorithms
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: calls.append(a))
    assert run_experiment("param-counts").status == "pass"
    assert calls == []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", real)

    def sets_the_flag(size, seed):  # an experiment that changes it is still undone
        torch.use_deterministic_algorithms(True)
        return Result(passed=True, measured={"x": 1.0})

    temp_experiment("stop55-deterministic", sets_the_flag)
    assert run_experiment("stop55-deterministic").status == "pass"
    assert torch.are_deterministic_algorithms_enabled() is False


def test_the_timed_out_advice_is_a_command_the_cli_takes():
    """Found in review: the advice read `tying run <id> ... -v`, which the parser refuses
    (-v goes before the subcommand)."""
    import re
    import shlex

    import tying.cli as cli
    import tying.experiments.runner as runner

    runner.load_all()
    msg = runner._timed_out_record("param-counts", "quick", 0, 1.0).error
    cmd = re.search(r"`tying ([^`]*)`", msg).group(1)
    args = cli._parser().parse_args(shlex.split(cmd))
    assert (args.command, args.size, args.seed) == ("run", "quick", 0)


def test_inductor_determinism_set_by_an_experiment_does_not_reach_the_next():
    """Found in review: restoring the deterministic flags only when they changed let an
    experiment's torch._inductor.config.deterministic reach the next one."""
    import torch._inductor.config as inductor_config

    import tying.experiments.runner as runner

    before = inductor_config.deterministic
    with runner._fresh_torch():
        inductor_config.deterministic = not before
    assert inductor_config.deterministic == before
