"""Record a load-test run in the store as one ``loadtest.run`` event.

The event says what ran against what (``labels.profile``, ``labels.release``,
``url.full``), when (``event.start``/``event.end``, ``event.duration`` in ns),
whether every gate passed (``event.outcome``) and the figures under
``loadtest.*``: requests, failures, error ratio, req/s, p95, checkout success
ratio, peak users, the result file, the gate verdicts, the baseline it was
compared with and the regressions found. Its id is a hash of the result file's
path, so recording the same run twice stores it once.

The result JSON file is the primary record: when the store cannot be opened or
written, ``record_run`` warns and returns False, and the run's exit code stays
the gates' verdict.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loadtests.compare import Regression
from loadtests.gates import GateResult
from loadtests.results import RunResult, warn_stderr
from siem.backends import open_store
from siem.model import Event, event_id
from vigil.settings import Settings

DATASET = "loadtest.run"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_event(
    result: RunResult,
    verdicts: Sequence[GateResult],
    path: str | Path,
    *,
    baseline: str | None = None,
    regressions: Sequence[Regression] = (),
) -> Event:
    """The ``loadtest.run`` event of the run written to ``path``.

    ``baseline`` is the file name of the run it was compared with (None: no
    earlier passing run), ``regressions`` what got worse against it.
    """
    path = Path(path).resolve()
    eid = event_id(DATASET, str(path))
    started = dt.datetime.fromisoformat(result.started_at)
    if started.tzinfo is None:
        started = started.replace(tzinfo=dt.UTC)
    ended = started + dt.timedelta(seconds=result.duration_s)
    passed = all(v.passed for v in verdicts)
    total = result.total
    labels = {"profile": result.profile}
    if result.release is not None:
        labels["release"] = result.release
    message = (
        f"load test {result.profile} against {result.host}: {'PASS' if passed else 'FAIL'}; "
        f"{total.requests} requests, {total.error_ratio:.1%} failed, p95 {total.p95_ms:.0f} ms"
    )
    if baseline is not None:
        message += f"; {len(regressions)} regression(s) against {baseline}"
    doc: dict[str, Any] = {
        "@timestamp": _iso(ended),
        "message": message,
        "event": {
            "id": eid,
            "dataset": DATASET,
            "kind": "event",
            "category": ["web"],
            "type": ["info"],
            "action": "loadtest",
            "outcome": "success" if passed else "failure",
            "start": _iso(started),
            "end": _iso(ended),
            "duration": int(result.duration_s * 1e9),
        },
        "service": {"name": "vigil-loadtest"},
        "url": {"full": result.host},
        "labels": labels,
        "loadtest": {
            "requests": total.requests,
            "failures": total.failures,
            "error_ratio": total.error_ratio,
            "rps": total.rps,
            "p95_ms": total.p95_ms,
            "checkout_success_ratio": result.checkout_success_ratio,
            "checkouts": dict(result.checkouts),
            "peak_users": result.peak_users,
            "result_file": str(path),
            "gates": [
                {"name": v.name, "passed": v.passed, "actual": v.measured, "limit": v.limit}
                for v in verdicts
            ],
            "baseline": baseline,
            "regressions": [r.to_json() for r in regressions],
            "regressed": bool(regressions),
        },
    }
    return Event(eid, ended.timestamp(), DATASET, doc)


def store_name(settings: Settings) -> str:
    """The configured store, as a warning names it: ``sqlite store data/siem.db``."""
    backend = settings.store.backend
    return f"sqlite store {settings.store_path}" if backend == "sqlite" else f"{backend} store"


def record_run(
    settings: Settings, event: Event, *, warn: Callable[[str], None] = warn_stderr
) -> bool:
    """Write ``event`` to the configured store and close it; False (and a warning) on failure."""
    try:
        store = open_store(settings)
        try:
            store.write(events=[event])
        finally:
            store.close()
    except Exception as exc:
        result_file = event.get("loadtest.result_file")
        warn(
            f"could not record the run as a {DATASET} event in the {store_name(settings)}: "
            f"{exc}; the result file {result_file} still has it"
        )
        return False
    return True
