"""``vigil user …`` and ``vigil token …``: manage who may use the web UI and the APIs.

::

    vigil user add NAME --role viewer|operator|admin [--password-stdin]
    vigil user list | remove NAME | passwd NAME [--password-stdin]
    vigil token create NAME --role viewer|operator|admin   (prints the token once)
    vigil token list | revoke ID

These work on ``data/users.db`` directly: whoever may write the data dir may
manage users. Each change is a ``vigil.audit`` event (actor: ``$USER``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from vigil.auth import ROLES, AuthError, UserStore, audit_event, users_path
from vigil.errors import VigilError
from vigil.settings import Settings, load_settings


def _store(args: argparse.Namespace) -> tuple[Settings, UserStore]:
    settings = load_settings(args.config)
    return settings, UserStore(users_path(settings))


def _actor() -> str:
    return os.environ.get("USER") or getpass.getuser()


def _audit(settings: Settings, action: str, message: str, **labels: str) -> None:
    from siem.backends import open_store

    event = audit_event(
        action, actor=_actor(), category="iam", message=message, labels=labels or None
    )
    try:
        store = open_store(settings)
        try:
            store.write(events=[event])
        finally:
            store.close()
    except VigilError as exc:
        # The change is made; say loudly that the trail misses it.
        print(f"vigil: warning: could not record the audit event: {exc}", file=sys.stderr)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise AuthError("the passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace) -> int:
    settings, users = _store(args)
    users.add_user(args.name, args.role, _password(args))
    _audit(settings, "user-add", f"user {args.name} added ({args.role})", target=args.name)
    print(f"user {args.name} added ({args.role})")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    _, users = _store(args)
    for row in users.list_users():
        print(f"{row.name}\t{row.role}\t{row.created}")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    settings, users = _store(args)
    users.remove_user(args.name)
    _audit(settings, "user-remove", f"user {args.name} removed", target=args.name)
    print(f"user {args.name} removed")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    settings, users = _store(args)
    users.set_password(args.name, _password(args))
    _audit(settings, "user-passwd", f"password of {args.name} changed", target=args.name)
    print(f"password of {args.name} changed")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    settings, users = _store(args)
    token_id, secret = users.create_token(args.name, args.role)
    _audit(
        settings, "token-create", f"token {token_id} for {args.name} ({args.role})", token=token_id
    )
    print(f"token {token_id} for {args.name} ({args.role}); it is shown only now:", file=sys.stderr)
    print(secret)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    _, users = _store(args)
    for row in users.list_tokens():
        state = "revoked" if row.revoked else "active"
        print(f"{row.id}\t{row.name}\t{row.role}\t{row.created}\t{state}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    settings, users = _store(args)
    row = users.revoke_token(args.id)
    _audit(settings, "token-revoke", f"token {row.id} of {row.name} revoked", token=row.id)
    print(f"token {row.id} of {row.name} revoked")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``vigil user`` and ``vigil token`` to the ``vigil`` command line."""
    user = sub.add_parser("user", help="users of the web UI (data/users.db)")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="add a user (password from a prompt or stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=cmd_user_add)
    user_sub.add_parser("list", help="list users").set_defaults(func=cmd_user_list)
    remove = user_sub.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_user_remove)
    passwd = user_sub.add_parser("passwd", help="set a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(func=cmd_user_passwd)

    token = sub.add_parser("token", help="API tokens for the CLI and automation")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token (printed once on stdout)")
    create.add_argument("name", help="who or what uses it")
    create.add_argument("--role", required=True, choices=ROLES)
    create.set_defaults(func=cmd_token_create)
    token_sub.add_parser("list", help="list tokens (never their secrets)").set_defaults(
        func=cmd_token_list
    )
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_token_revoke)
