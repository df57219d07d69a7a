"""`tying -v run ID --timeout N` shows the experiment's INFO lines, as without --timeout."""

import os
import subprocess
import sys


def test_verbose_run_with_timeout_shows_the_experiments_log(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "tying", "-v", "run", "param-counts", "--timeout", "120"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # logged in the worker process that runs the experiment (before: nothing came out)
    assert "param-counts: running at size quick, seed 0" in done.stderr
