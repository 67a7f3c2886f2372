"""The load-test child process: runs a profile through locust's library API.

``vigil loadtest`` starts ``python -m loadtests.runner`` rather than importing
locust itself: locust monkey-patches the process with gevent on import, which
breaks ssl once anything (urllib3, slack-sdk…) imported it first — as the
``vigil`` process may have. Here locust is the first third-party import that
touches ssl. Statistics come straight from ``Environment.stats`` (no CSV to
parse) and checkout outcomes from the request event; the ``RunResult`` is
written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import STATE_STOPPED
from locust.shape import LoadTestShape
from locust.stats import StatsEntry

from loadtests.locustfile import Shopper
from loadtests.profiles import Profile, load_profile
from loadtests.results import CHECKOUT_ROUTE, RouteStats, RunResult, checkout_outcome
from loadtests.shapes import Shape
from vigil.logging import setup_logging

log = logging.getLogger(__name__)

# How long past the profile's duration a run may take to stop before it is cut.
STOP_GRACE_S = 30.0


class StagedLoadShape(LoadTestShape):
    """Adapts a ``loadtests.shapes.Shape`` to locust's ``LoadTestShape``."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape

    def tick(self) -> tuple[int, float] | None:
        return self.shape.tick(self.get_run_time())


def run_profile(profile: Profile, host: str, release: str | None = None) -> RunResult:
    """Run ``profile`` against ``host`` (serving ``release``) until its shape ends."""
    checkouts: Counter[str] = Counter()

    def on_request(name: str, response: Any = None, **_: Any) -> None:
        if name == CHECKOUT_ROUTE:
            checkouts[checkout_outcome(int(getattr(response, "status_code", 0) or 0))] += 1

    env = Environment(
        user_classes=[Shopper], shape_class=StagedLoadShape(profile.build_shape()), host=host
    )
    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    started_at = dt.datetime.now(dt.UTC)
    start = time.monotonic()
    deadline = start + profile.duration_s + STOP_GRACE_S
    peak_users = 0
    log.info(
        "load test starting",
        extra={"labels": {"profile": profile.name, "host": host, "release": release or ""}},
    )
    runner.start_shape()
    while runner.state != STATE_STOPPED:
        if time.monotonic() > deadline:
            log.warning("load test did not stop in time; stopping it")
            runner.stop()
            break
        peak_users = max(peak_users, runner.user_count)
        gevent.sleep(0.25)
    elapsed = time.monotonic() - start
    exceptions = sum(int(e["count"]) for e in runner.exceptions.values())
    routes = tuple(
        _route_stats(entry, elapsed)
        for _, entry in sorted(env.stats.entries.items(), key=lambda kv: kv[0])
    )
    total = _route_stats(env.stats.total, elapsed)
    runner.quit()
    return RunResult(
        profile=profile.name,
        host=host,
        release=release,
        started_at=started_at.isoformat(timespec="seconds"),
        duration_s=round(elapsed, 3),
        peak_users=peak_users,
        routes=routes,
        total=total,
        checkouts=dict(checkouts),
        exceptions=exceptions,
    )


def _route_stats(entry: StatsEntry, elapsed_s: float) -> RouteStats:
    count = entry.num_requests
    return RouteStats(
        method=entry.method or "",
        name=entry.name,
        requests=count,
        failures=entry.num_failures,
        rps=round(count / elapsed_s, 3) if elapsed_s > 0 else 0.0,
        p50_ms=float(entry.get_response_time_percentile(0.5) if count else 0),
        p95_ms=float(entry.get_response_time_percentile(0.95) if count else 0),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m loadtests.runner --profile FILE --host URL --out FILE [...]``."""
    parser = argparse.ArgumentParser(prog="python -m loadtests.runner")
    parser.add_argument("--profile", required=True, help="profile name or file")
    parser.add_argument("--host", required=True)
    parser.add_argument("--out", required=True, help="where to write the RunResult JSON")
    parser.add_argument("--duration-s", type=float)
    parser.add_argument("--users", type=int)
    parser.add_argument("--release")
    parser.add_argument("--data-dir", help="write the ECS JSON log under DIR/logs/vigil/")
    args = parser.parse_args(argv)
    # Only warnings reach the console, so they do not end up inside the summary tables.
    setup_logging("loadtest", data_dir=args.data_dir, console_level=logging.WARNING)
    profile = load_profile(args.profile).with_overrides(
        duration_s=args.duration_s, users=args.users
    )
    result = run_profile(profile, args.host, args.release)
    out = Path(args.out)
    out.write_text(json.dumps(result.to_json(), ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
