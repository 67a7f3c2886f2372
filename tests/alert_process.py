"""``vigil alert`` as its own process for restart tests: start it, stop it as systemd does,
read its ``/metrics``."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start_alert(config: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """``vigil --config CONFIG alert`` in the repository, output discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", "vigil.cli", "--config", str(config), "alert"],
        env=dict(env),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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
