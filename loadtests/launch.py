"""Start a load test from the ``vigil`` process: check the host, run the child, read its result.

The run itself happens in ``python -m loadtests.runner`` (see there for why);
this side never imports locust.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from loadtests.errors import LoadTestError
from loadtests.profiles import Profile
from loadtests.results import RunResult

# Time allowed on top of the profile's duration for start-up and the stop grace.
CHILD_SLACK_S = 90.0


def shop_release(host: str, timeout_s: float = 5.0) -> str | None:
    """The release the shop at ``host`` serves; LoadTestError when it does not answer."""
    url = host.rstrip("/") + "/api/version"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise LoadTestError(f"{url} answered HTTP {exc.code}; is {host} the shop?") from None
    except (OSError, ValueError) as exc:
        raise LoadTestError(
            f"the shop at {host} does not answer ({exc}); "
            "start it (vigil shop serve) or pass the right --host"
        ) from None
    try:
        release = json.loads(body).get("release")
    except (ValueError, AttributeError):
        return None
    return str(release) if release is not None else None


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit(143) so ``finally`` blocks stop the child."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_in_child(
    profile: Profile, host: str, release: str | None, *, data_dir: str | None = None
) -> RunResult:
    """Run ``profile`` against ``host`` in a child interpreter; its warnings go to our stderr,
    its full log (ECS JSON) to ``<data_dir>/logs/vigil/loadtest.json``."""
    with tempfile.TemporaryDirectory(prefix="vigil-loadtest-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "loadtests.runner",
            "--profile",
            profile.source,
            "--host",
            host,
            "--out",
            str(out),
            "--duration-s",
            str(profile.duration_s),
            "--users",
            str(profile.users),
        ]
        if release is not None:
            cmd += ["--release", release]
        if data_dir is not None:
            cmd += ["--data-dir", data_dir]
        limit_s = profile.duration_s + CHILD_SLACK_S
        # The child's stdout joins our stderr (fd 2): our stdout carries only the tables.
        with _sigterm_as_exit(), subprocess.Popen(cmd, stdout=2) as proc:
            try:
                code = proc.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                raise LoadTestError(
                    f"the load test did not finish within {limit_s:.0f} s"
                ) from None
            finally:
                # Interrupted, terminated or timed out: the child must not load the shop on.
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        if code != 0 or not out.is_file():
            raise LoadTestError(f"the load-test process failed with exit code {code}; see above")
        return RunResult.from_json(json.loads(out.read_text(encoding="utf-8")))
