"""``vigil loadtest PROFILE [--host URL] [--duration 20s] [--users N]``.

Exit codes: 0 every gate passed, 1 a gate failed, 2 bad input (unknown or
invalid profile, bad option, unreachable host). The result is written to
``<data_dir>/loadtests/<timestamp>-<profile>.json`` and recorded in the store
as one ``loadtest.run`` event (``loadtests/record.py``); when the store cannot
be written a warning says so and the exit code is still the gates'.

Each run is compared with the last earlier run of the same profile whose gates
all passed (``last_good_result``): p95, error ratio and req/s per route and over
all routes, then and now, with regressions (p95 up more than 20 %, error ratio
up more than 1 percentage point, on routes with at least 50 requests in both
runs) marked ``REGRESSED``. The comparison is
informational; it never changes the exit code.
"""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit

from loadtests.compare import compare_runs, comparison_table
from loadtests.errors import LoadTestError
from loadtests.gates import evaluate_gates, gate_table
from loadtests.launch import run_in_child, shop_release
from loadtests.profiles import available_profiles, load_profile, parse_duration
from loadtests.record import record_run, run_event
from loadtests.results import last_good_result, summary_table, write_result
from vigil.settings import load_settings


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _check_host(host: str) -> str:
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LoadTestError(f"--host must be a URL such as http://127.0.0.1:8001, got {host!r}")
    return host.rstrip("/")


def cmd_loadtest(args: argparse.Namespace) -> int:
    """Run a profile headless, print the summary, comparison and gate tables, exit by the gates.

    The run is written as JSON first (the primary record), then recorded as a
    ``loadtest.run`` event; a store failure only warns.
    """
    settings = load_settings(args.config)
    profile = load_profile(args.profile)
    try:
        duration_s = parse_duration(args.duration) if args.duration else None
    except ValueError as exc:
        raise LoadTestError(f"--duration: {exc}") from None
    profile = profile.with_overrides(duration_s=duration_s, users=args.users)
    host = _check_host(args.host or f"http://{settings.shop.host}:{settings.shop.port}")
    result = run_in_child(profile, host, shop_release(host), data_dir=settings.data_dir)
    verdicts = evaluate_gates(result, profile.gates)
    # The result file first: whatever happens next, the run is not lost.
    path = write_result(settings.data_dir, result, verdicts)
    # Only runs that started before this one count, so it is never its own baseline.
    baseline = last_good_result(settings.data_dir, result.profile, before=path)
    print(summary_table(result))
    print()
    comparison = None
    if baseline is None:
        print(f"no earlier passing run of {result.profile} to compare with")
    else:
        comparison = compare_runs(baseline.result, result)
        print(comparison_table(comparison, baseline.path.name))
    print()
    print(gate_table(verdicts) if verdicts else "no gates in this profile")
    passed = all(v.passed for v in verdicts)
    record_run(
        settings,
        run_event(
            result,
            verdicts,
            path,
            baseline=baseline.path.name if baseline is not None else None,
            regressions=comparison.regressions if comparison is not None else (),
        ),
    )
    print()
    print(f"{'PASS' if passed else 'FAIL'}: {profile.name}; result written to {path}", flush=True)
    return 0 if passed else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``loadtest`` to the ``vigil`` command line."""
    p = sub.add_parser(
        "loadtest",
        help="run a load-test profile headless and check its gates",
        description="Run a load-test profile with locust, headless; exit 1 when a gate fails.",
    )
    p.add_argument(
        "profile",
        help=f"profile name ({', '.join(available_profiles())}) or path to a profile .yaml",
    )
    p.add_argument("--host", help="base URL of the shop or haproxy (default: the shop's address)")
    p.add_argument("--duration", help="override the profile's duration, e.g. 20s or 2m")
    p.add_argument("--users", type=_positive_int, help="override the profile's peak users")
    p.set_defaults(func=cmd_loadtest)
