"""The report renders in a real browser: every figure loads, one row per experiment.

Uses Debian's headless Chromium. When it is missing the test installs it once with
``apt-get install -y chromium`` (only as root, where apt-get exists); otherwise, or
when that fails, it is skipped with the reason.
"""

from __future__ import annotations

import functools
import html.parser
import os
import shutil
import subprocess

import pytest

from tying.cli import main
from tying.experiments import load_all

pytestmark = pytest.mark.browser

ONLY = ["param-counts", "conv-is-tied-lc"]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _which_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@functools.cache
def _chromium() -> tuple[str | None, str]:
    """(path, why not): the browser, installing it once when we may."""
    path = _which_chromium()
    if path:
        return path, ""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None, "chromium is not installed and we are not root to apt-get install it"
    if not shutil.which("apt-get"):
        return None, "chromium is not installed and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmds = [
        ["apt-get", "install", "-y", "chromium"],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "chromium"],
    ]
    log = []
    for cmd in cmds:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"`{' '.join(cmd)}` failed: {exc}"
        log.append(proc.stderr[-300:])
        if cmd[1] == "install" and proc.returncode == 0:
            break
    path = _which_chromium()
    return (path, "") if path else (None, "apt-get install chromium failed: " + " | ".join(log))


class _Dom(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.body: dict = {}
        self.imgs: list[dict] = []
        self.rows: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "tr" and "claim-row" in (a.get("class") or ""):
            self.rows.append(a)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    browser, why = _chromium()
    if browser is None:
        pytest.skip(f"headless Chromium unavailable: {why}")
    out = tmp_path_factory.mktemp("report")
    assert main(["report", "--size", "quick", "--only", ",".join(ONLY), "--out", str(out)]) == 0
    profile = tmp_path_factory.mktemp("chromium-profile")
    url = (out / "index.html").as_uri()
    base = [browser, *FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run(
        [*base, "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = out / "screenshot.png"
    subprocess.run(
        [*base, "--window-size=1280,1600", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    parser = _Dom()
    parser.feed(dom.stdout)
    return parser, shot


def test_every_figure_loaded(rendered):
    dom, _ = rendered
    assert dom.body.get("data-figures-checked") == "yes", "the page's load script did not run"
    assert dom.body.get("data-broken-figures") == "0"
    # each experiment's figure appears twice: thumbnail in the summary and in its section
    assert len(dom.imgs) == int(dom.body["data-figures"]) >= 2 * len(ONLY)
    for img in dom.imgs:
        assert img.get("data-loaded") == "yes", img
        assert int(img["data-natural-width"]) > 0, img


def test_summary_has_one_row_per_registered_experiment(rendered):
    dom, _ = rendered
    registered = [r["data-id"] for r in dom.rows if r.get("data-registered") == "1"]
    assert sorted(registered) == sorted(load_all())
    ran = [r["data-id"] for r in dom.rows if "experiment-row" in r["class"]]
    assert ran == ONLY
    assert all(r["data-status"] == "pass" for r in dom.rows if r["data-id"] in ONLY)


def test_page_renders_to_a_screenshot(rendered):
    _, shot = rendered
    assert shot.exists() and shot.stat().st_size > 20_000
