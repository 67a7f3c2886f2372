"""``vigil playbook``: list and run playbooks.

vigil playbook list
vigil playbook run NAME [--dry-run] [--yes] [--param k=v ...] [--actor NAME]

NAME is a playbook in ``playbooks/`` or a path to a playbook file. Exit codes:
0 done, 1 a step failed (or the run was not confirmed), 2 bad input or no
confirmation possible (stdin is not a terminal and ``--yes`` is missing).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from playbooks.context import default_context
from playbooks.loader import find_playbook, load_playbook, playbook_paths
from playbooks.model import PlaybookError
from playbooks.runner import run
from vigil.logging import setup_logging
from vigil.settings import load_settings


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``vigil playbook run|list`` to the ``vigil`` parser."""
    playbook = sub.add_parser("playbook", help="run remediation playbooks")
    playbook_sub = playbook.add_subparsers(dest="playbook_command", required=True)
    run_parser = playbook_sub.add_parser("run", help="run a playbook step by step")
    run_parser.add_argument("name", help="playbook name (see `vigil playbook list`) or file")
    run_parser.add_argument(
        "--dry-run", action="store_true", help="print what each step would do; change nothing"
    )
    run_parser.add_argument("--yes", "-y", action="store_true", help="do not ask to confirm")
    run_parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="set a parameter"
    )
    run_parser.add_argument("--actor", help="who runs it, for the audit trail (default: $USER)")
    run_parser.set_defaults(func=cmd_run)
    playbook_sub.add_parser("list", help="list the playbooks and check them").set_defaults(
        func=cmd_list
    )


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``["release=v1"]`` → ``{"release": "v1"}``."""
    rv: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PlaybookError(f"--param {pair!r}: expected KEY=VALUE, e.g. --param release=v1")
        rv[key.strip()] = value
    return rv


def current_actor(explicit: str | None = None) -> str:
    """``--actor``, else ``$USER``, else the login name."""
    if explicit:
        return explicit
    if os.environ.get("USER"):
        return os.environ["USER"]
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _confirm(prompt: str) -> bool:
    try:
        answer = input(f"{prompt} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


def cmd_run(args: argparse.Namespace) -> int:
    params = parse_params(args.param)
    playbook = find_playbook(args.name)
    if not args.dry_run and not args.yes and not sys.stdin.isatty():
        print(
            f"vigil: error: {playbook.name} changes the system and stdin is not a terminal, "
            "so it cannot ask for confirmation; pass --yes to run it, or --dry-run to see "
            "what it would do",
            file=sys.stderr,
        )
        return 2
    settings = load_settings(args.config)
    setup_logging(
        "playbook", data_dir=settings.data_dir, log_format=getattr(args, "log_format", None)
    )
    from vigil.auth import token_actor

    ctx = default_context(settings, token_actor(settings, current_actor(args.actor)))
    try:
        result = run(
            playbook,
            ctx,
            params=params,
            dry_run=args.dry_run,
            assume_yes=args.yes,
            confirm=_confirm,
        )
    finally:
        ctx.store.close()
    return result.exit_code


def cmd_list(args: argparse.Namespace) -> int:
    rv = 0
    for path in playbook_paths():
        try:
            playbook = load_playbook(path)
        except PlaybookError as exc:
            print(f"vigil: error: {exc}", file=sys.stderr)
            rv = 1
            continue
        params = ", ".join(
            p.name if p.default is None else f"{p.name}={p.default!r}" for p in playbook.params
        )
        print(f"{playbook.name:<24} {playbook.description}")
        if params:
            print(f"{'':<24} params: {params}")
        if playbook.runbook:
            print(f"{'':<24} runbook: {playbook.runbook}")
    return rv
