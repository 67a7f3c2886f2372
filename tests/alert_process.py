"""``vigil alert`` as its own process for restart tests: start it, stop it as systemd does,
read its ``/metrics``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from conftest import wait_until

REPO = Path(__file__).resolve().parents[1]

_OWN_SETTINGS = ("VIGIL_DATA_DIR", "VIGIL_ALERT_INTERVAL", "VIGIL_ALERTMANAGER_CONFIG")
"""Settings a test's config file gives: the caller's environment must not override them."""


def alert_env(port: int, **extra: str) -> dict[str, str]:
    """This environment for ``vigil alert`` on ``port``, without the settings the test's
    config file gives, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _OWN_SETTINGS}
    env["VIGIL_ALERT_PORT"] = str(port)
    env.update(extra)
    return env


def start_alert(config: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """``vigil --config CONFIG alert`` in the repository, output discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", "vigil.cli", "--config", str(config), "alert"],
        env=dict(env),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def ready(url: str) -> bool:
    """True when ``vigil alert``'s port at ``url`` answers ``/-/ready``."""
    try:
        with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextmanager
def running_alert(config: Path, env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``vigil alert`` started and ready (30 s at most); stopped as systemd does after."""
    proc = start_alert(config, env)
    try:
        wait_until(
            "vigil alert's API", lambda: ready(f"http://127.0.0.1:{env['VIGIL_ALERT_PORT']}"), 30
        )
        yield proc
    finally:
        if proc.poll() is None:
            stop_alert(proc)


def stop_alert(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as ``vigil up`` and systemd stop it; it must exit cleanly."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def metric(port: int, prefix: str) -> float:
    """The first sample whose line starts with ``prefix`` on the process's ``/metrics``;
    -1 when the process does not answer or has no such sample."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return -1.0
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return -1.0
