"""The ``vigil`` command line.

::

    vigil up                      start and supervise the whole stack (make run)
    vigil deploy --release vN     roll the shop onto a release, one instance at a time
    vigil shop serve [--port N]   one shop instance under gunicorn
    vigil shop init-db            create and seed the shop's database
    vigil collect [--once]        scrape metrics and tail logs into the store
    vigil alert [--once]          evaluate rules, notify Slack and webhooks
    vigil rules check [FILE...]   validate rule files (file:line issues)
    vigil web                     the dashboards (overview, JSON query API)
    vigil search 'KQL' --since 15m    events from the store (table or --json NDJSON)
    vigil store stats [--json]    events, size, oldest and newest per dataset
    vigil store prune [--dry-run] apply the retention settings now (--vacuum: SQLite shrinks)
    vigil loadtest PROFILE        run a load-test profile; exit 1 when a gate fails
    vigil playbook run NAME       run a playbook (--dry-run, --yes)
    vigil config check [FILE]     validate a config file (file:line on errors)
    vigil config reference        the options table (docs/configuration.md)
    vigil user add|list|remove|passwd    users of the web UI (roles viewer/operator/admin)
    vigil token create|list|revoke       API tokens (Authorization: Bearer)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from vigil.errors import VigilError
from vigil.settings import Settings, describe_options, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    env = dict(os.environ)
    # Flags win over the environment, which wins over the file.
    for flag, var in (
        ("port", "VIGIL_SHOP_PORT"),
        ("release", "VIGIL_SHOP_RELEASE"),
        ("workers", "VIGIL_SHOP_WORKERS"),
        ("data_dir", "VIGIL_DATA_DIR"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            env[var] = str(value)
    return load_settings(args.config, env=env)


def cmd_up(args: argparse.Namespace) -> int:
    from vigil.auth import UserStore, users_path
    from vigil.logging import setup_logging
    from vigil.supervisor import Supervisor

    settings = _settings(args)
    console = setup_logging(
        "up", data_dir=settings.data_dir, log_format=getattr(args, "log_format", None)
    )
    supervisor = Supervisor(settings, config=args.config)
    # First start: an admin with a random password, shown once in the banner, stored hashed.
    first_password = UserStore(users_path(settings)).ensure_admin()

    def ready() -> None:
        print("Vigil is up. Open:", flush=True)
        for name, url in up_urls(settings, haproxy="haproxy" in supervisor.children):
            print(f"  {name:<22} {url}", flush=True)
        if first_password:
            print(f"  {'admin password':<22} {first_password}", flush=True)
            print("  (shown once: log in as admin, then `vigil user passwd admin`)", flush=True)
        print("Stop with Ctrl-C.", flush=True)

    # On a terminal the children's lines are shown there too, as human lines.
    supervisor.run(on_ready=ready, echo=sys.stderr if console == "human" else None)
    return 0


def up_urls(settings: Settings, *, haproxy: bool) -> list[tuple[str, str]]:
    """What ``vigil up`` serves, for the banner and the README."""
    rv = []
    if haproxy:
        rv.append(("shop (via haproxy)", f"http://127.0.0.1:{settings.up.haproxy_port}/"))
        stats = f"http://127.0.0.1:{settings.up.haproxy_metrics_port}/stats"
        rv.append(("haproxy stats", stats))
    base = settings.up.shop_base_port
    for n in range(settings.up.shop_instances):
        rv.append((f"shop instance {n + 1}", f"http://127.0.0.1:{base + n}/"))
    rv.append(("dashboards", f"http://{settings.web.host}:{settings.web.port}/"))
    rv.append(("supervisor API", f"http://127.0.0.1:{settings.up.control_port}/api/instances"))
    rv.append(("data dir", os.path.abspath(settings.data_dir)))
    return rv


def cmd_deploy(args: argparse.Namespace) -> int:
    from shop.releases import get_release
    from siem.backends import open_store
    from vigil.auth import token_actor
    from vigil.deploy import roll_out

    settings = _settings(args)
    get_release(args.release)
    store = open_store(settings)
    try:
        result = roll_out(
            settings,
            args.release,
            actor=token_actor(settings, args.actor),
            store=store,
            on_step=lambda s: print(
                f"  {s.instance}: {s.release_before} -> {s.release_after} ({s.seconds:.1f} s)",
                flush=True,
            ),
        )
    finally:
        store.close()
    print(f"deployed {result.release_after} (was {result.release_before})")
    return 0


def cmd_shop_serve(args: argparse.Namespace) -> int:
    from shop.server import serve

    serve(_settings(args))
    return 0


def cmd_shop_init_db(args: argparse.Namespace) -> int:
    from shop.server import init_database

    settings = _settings(args)
    init_database(settings)
    print(f"shop database ready: {settings.shop_db_url}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    import alerting  # noqa: F401  # registers its checks (the alert.email section)
    import collectors  # noqa: F401  # registers its checks (parser names, log_line_prefix)
    from shop.releases import get_release

    settings = _settings(args)
    get_release(settings.shop.release)
    print(
        f"ok: {args.config or 'defaults + environment'} (data dir {settings.data_dir}, "
        f"shop port {settings.shop.port}, release {settings.shop.release})"
    )
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    print(reference_markdown(), end="")
    return 0


def reference_markdown() -> str:
    """The configuration reference table, as committed in docs/configuration.md."""
    lines = ["| key | default | environment variable | meaning |", "|---|---|---|---|"]
    for key, default, env, help_text in describe_options():
        env_cell = f"`{env}`" if env else ""
        default_cell = default.replace("|", "\\|")
        lines.append(f"| `{key}` | `{default_cell}` | {env_cell} | {help_text} |")
    return "\n".join(lines) + "\n"


def _plugin_commands() -> list[Callable[[Any], None]]:
    """Each platform package adds its own subcommands (collect, alert, web, …)."""
    from alerting.cli import add_commands as alert
    from collectors.cli import add_commands as collect
    from dashboards.cli import add_commands as web
    from dashboards.search_cli import add_commands as search
    from loadtests.cli import add_commands as loadtest
    from playbooks.cli import add_commands as playbook
    from siem.cli import add_commands as store
    from vigil.authcli import add_commands as users

    return [collect, alert, web, search, store, loadtest, playbook, users]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Vigil operations platform")
    parser.add_argument(
        "--config", help="config file (default: $VIGIL_CONFIG or config/vigil.yaml when it exists)"
    )
    parser.add_argument(
        "--log-format",
        choices=["human", "json"],
        help="console log format (VIGIL_LOG_FORMAT; default: human on a terminal, else json)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_shop_flags(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--port", type=int, help="shop port (VIGIL_SHOP_PORT)")
        p.add_argument("--release", help="shop release, v1 or v2 (VIGIL_SHOP_RELEASE)")
        p.add_argument("--workers", type=int, help="gunicorn workers (VIGIL_SHOP_WORKERS)")
        p.add_argument("--data-dir", dest="data_dir", help="data dir (VIGIL_DATA_DIR)")
        return p

    with_shop_flags(sub.add_parser("up", help="start and supervise the whole stack")).set_defaults(
        func=cmd_up
    )
    deploy = sub.add_parser("deploy", help="roll the shop onto a release, one instance at a time")
    deploy.add_argument("--release", required=True, help="v1 or v2")
    deploy.add_argument(
        "--actor",
        default=os.environ.get("USER", "unknown"),
        help="who deploys (recorded in the vigil.deploy and vigil.audit events); "
        "with a user token in $VIGIL_TOKEN, that token's user",
    )
    deploy.set_defaults(func=cmd_deploy)

    shop = sub.add_parser("shop", help="the reference shop")
    shop_sub = shop.add_subparsers(dest="shop_command", required=True)
    with_shop_flags(shop_sub.add_parser("serve", help="serve the shop with gunicorn")).set_defaults(
        func=cmd_shop_serve
    )
    with_shop_flags(
        shop_sub.add_parser("init-db", help="create and seed the database")
    ).set_defaults(func=cmd_shop_init_db)

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file", nargs="?", help="file to check")
    check.set_defaults(func=cmd_config_check)
    config_sub.add_parser("reference", help="print the options table").set_defaults(
        func=cmd_config_reference
    )
    for add_commands in _plugin_commands():
        add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "file", None):
        args.config = args.file
    try:
        rv: int = args.func(args)
    except VigilError as exc:
        print(f"vigil: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rv


if __name__ == "__main__":
    sys.exit(main())
