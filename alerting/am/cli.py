"""``vigil am check-config|routes`` and ``vigil silence add|query|expire``, as ``amtool`` has them.

``vigil am routes test --tree severity=critical alertname=X`` prints the receivers
the label set routes to, comma-separated in tree order, exactly as
``amtool config routes test`` does (exit 1 with ``--verify.receivers`` when they
differ). Silences are written to ``<data_dir>/alerts.db``, where a running
``vigil alert`` reads them on its next pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
import time
from pathlib import Path

from alerting.am.acks import DEFAULT_ACK_S, AckError, AckStore, group_id
from alerting.am.config import AMConfigError, Route, load_config
from alerting.am.dispatch import Group, acknowledge_stored, stored_groups
from alerting.am.matchers import MatcherSyntaxError, format_matcher, parse_matchers
from alerting.am.silences import SilenceError, SilenceStore, new_silence
from vigil.auth import audit_event, token_actor
from vigil.errors import VigilError
from vigil.settings import Settings, load_settings
from vigil.units import parse_duration

DEFAULT_CONFIG = "config/alertmanager.yaml"


def add_commands(sub: argparse._SubParsersAction) -> None:
    am = sub.add_parser("am", help="Alertmanager configuration: check it, show and test routes")
    am_sub = am.add_subparsers(dest="am_command", required=True)
    check = am_sub.add_parser("check-config", help="validate Alertmanager configuration files")
    check.add_argument("files", nargs="*", metavar="FILE")
    check.set_defaults(func=cmd_check_config)
    routes = am_sub.add_parser("routes", help="show the routing tree")
    routes.add_argument("--config.file", dest="am_file", default="", metavar="FILE")
    routes.set_defaults(func=cmd_routes)
    routes_sub = routes.add_subparsers(dest="routes_command")
    test = routes_sub.add_parser("test", help="the receivers a label set routes to")
    test.add_argument("--config.file", dest="am_file", default="", metavar="FILE")
    test.add_argument("--tree", action="store_true", help="show the matching routes as a tree")
    test.add_argument(
        "--verify.receivers", dest="verify", default="", help="exit 1 unless these receivers"
    )
    test.add_argument("labels", nargs="*", metavar="NAME=VALUE")
    test.set_defaults(func=cmd_routes_test)

    silence = sub.add_parser("silence", help="add, query and expire silences")
    s_sub = silence.add_subparsers(dest="silence_command", required=True)
    add = s_sub.add_parser("add", help="silence alerts matching the matchers")
    add.add_argument("matchers", nargs="+", metavar="MATCHER", help='e.g. alertname="Disk"')
    add.add_argument("-a", "--author", default="", help="who silences (default: the user)")
    add.add_argument("-c", "--comment", default="", help="why (required)")
    add.add_argument("-d", "--duration", default="1h", help="how long (default 1h)")
    add.add_argument("--start", default="", help="RFC 3339 start (default now)")
    add.add_argument("--end", default="", help="RFC 3339 end (overrides --duration)")
    add.set_defaults(func=cmd_silence_add)
    query = s_sub.add_parser("query", help="list silences")
    query.add_argument("matchers", nargs="*", metavar="MATCHER")
    query.add_argument("--expired", action="store_true", help="expired silences instead")
    query.add_argument("-q", "--quiet", action="store_true", help="only the ids")
    query.set_defaults(func=cmd_silence_query)
    expire = s_sub.add_parser("expire", help="end silences now")
    expire.add_argument("ids", nargs="+", metavar="ID")
    expire.set_defaults(func=cmd_silence_expire)


def ack_commands(alert_sub: argparse._SubParsersAction) -> None:
    """``vigil alert ack GROUP [--for 1h]`` and ``vigil alert ack --list``."""
    ack = alert_sub.add_parser(
        "ack", help="acknowledge an alert group: no repeats until it resolves or changes"
    )
    ack.add_argument("group", nargs="?", default="", help="group id or key (see --list)")
    ack.add_argument("--for", dest="for_", default="4h", help="how long it holds (default 4h)")
    ack.add_argument("--list", action="store_true", help="list the groups and their acks")
    ack.add_argument("--actor", default="", help="who acknowledges (default: token user/$USER)")
    ack.set_defaults(func=cmd_ack)


def cmd_ack(args: argparse.Namespace) -> int:
    """Acknowledge in ``alerts.db``; the running ``vigil alert`` picks it up on its next
    pass (and edits the Slack message). Every acknowledgement is a ``vigil.audit`` event."""
    settings = load_settings(args.config)
    db = Path(settings.data_dir) / "alerts.db"
    if args.list or not args.group:
        store = AckStore(db)
        try:
            _print_groups(stored_groups(db), store)
        finally:
            store.close()
        return 0
    actor = token_actor(settings, args.actor or getpass.getuser())
    try:
        try:
            for_s = parse_duration(args.for_) if args.for_ else DEFAULT_ACK_S
        except ValueError as exc:
            raise AckError(f"--for: {exc}") from None
        ack = acknowledge_stored(db, args.group, actor, for_s, time.time())
    except AckError as exc:
        print(f"alert ack: {exc}", file=sys.stderr)
        return 1
    gid = group_id(ack.group_key)
    print(f"{gid} acknowledged by {actor} until {_iso(ack.ends_at)}")
    _audit(settings, actor, f"{actor} acknowledged {ack.group_key}", gid)
    return 0


def _print_groups(groups: list[Group], store: AckStore) -> None:
    now = time.time()
    print(f"{'ID':12}  {'Firing':6}  {'Acknowledged':32}  Group")
    for g in sorted(groups, key=lambda g: g.key):
        firing = {fp for fp, a in g.alerts.items() if a.state == "firing"}
        ack = store.get(g.key)
        held = f"{ack.by} until {_iso(ack.ends_at)}" if ack and ack.covers(firing, now) else "-"
        print(f"{group_id(g.key):12}  {len(firing):6}  {held:32}  {g.key}")


def _audit(settings: Settings, actor: str, message: str, gid: str) -> None:
    from siem.backends import open_store

    event = audit_event(
        "alert-ack",
        actor=actor,
        category="configuration",
        message=message,
        labels={"group": gid, "via": "cli"},
    )
    try:
        events = open_store(settings)
        try:
            events.write(events=[event])
        finally:
            events.close()
    except VigilError as exc:  # the ack is made; say loudly that the trail misses it
        print(f"vigil: warning: could not record the audit event: {exc}", file=sys.stderr)


def config_path(settings: Settings) -> str:
    return settings.alert.alertmanager_config or DEFAULT_CONFIG


def cmd_check_config(args: argparse.Namespace) -> int:
    files = args.files or [config_path(load_settings(args.config))]
    failed = 0
    for file in files:
        try:
            cfg = load_config(file)
        except AMConfigError as exc:
            print(f"Checking '{file}'  FAILED: {exc}")
            failed += 1
            continue
        print(f"Checking '{file}'  SUCCESS")
        print(f" - {len(cfg.receivers)} receivers, {len(cfg.inhibit_rules)} inhibit rules")
        for r in cfg.receivers.values():
            if r.unsupported:
                kinds = ", ".join(sorted(set(r.unsupported)))
                print(f" - receiver {r.name}: {kinds} are not delivered by Vigil")
    return 1 if failed else 0


def _load(args: argparse.Namespace) -> Route | None:
    file = args.am_file or config_path(load_settings(args.config))
    try:
        return load_config(file).route
    except AMConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def _describe(route: Route, *, receiver: bool = True) -> str:
    if route.index == "0":
        text = "default-route"
    else:
        text = "{" + ",".join(format_matcher(m) for m in route.matchers) + "}"
    if route.continue_:
        text += "  continue: true"
    return text + (f"  receiver: {route.receiver}" if receiver else "")


def tree(route: Route, only: set[str] | None = None) -> list[str]:
    """amtool's drawing of the tree (``only``: the route indexes on matching paths)."""
    lines: list[str] = []

    def walk(r: Route, prefix: str, last: bool) -> None:
        shown = only is None or r.index in only
        if not shown:
            return
        leaf = only is None or not any(c.index in only for c in r.routes)
        lines.append(prefix + ("└── " if last else "├── ") + _describe(r, receiver=leaf))
        kids = [c for c in r.routes if only is None or c.index in only]
        for i, child in enumerate(kids):
            walk(child, prefix + ("    " if last else "│   "), i == len(kids) - 1)

    lines.append(".")
    walk(route, "", True)
    return lines


def cmd_routes(args: argparse.Namespace) -> int:
    route = _load(args)
    if route is None:
        return 1
    print("Routing tree:")
    print("\n".join(tree(route)))
    return 0


def cmd_routes_test(args: argparse.Namespace) -> int:
    route = _load(args)
    if route is None:
        return 1
    labels: dict[str, str] = {}
    for text in args.labels:
        try:
            matchers = parse_matchers(text)
        except MatcherSyntaxError as exc:
            print(f"bad label {text!r}: {exc}", file=sys.stderr)
            return 1
        for m in matchers:
            if m.op != "=":
                print(f"bad label {text!r}: write it as name=value", file=sys.stderr)
                return 1
            labels[m.name] = m.value
    found = route.match(labels)
    if args.tree:
        on_path = {r.index for f in found for r in _path(route, f.index)}
        print("Matching routes:")
        print("\n".join(tree(route, on_path)))
        print("\n")
    slug = ",".join(r.receiver for r in found)
    print(slug)
    if args.verify and args.verify != slug:
        print("WARNING: Expected receivers did not match resolved receivers.")
        return 1
    return 0


def _path(root: Route, index: str) -> list[Route]:
    parts = index.split(".")
    rv = [root]
    for i in range(1, len(parts)):
        rv.append(rv[-1].routes[int(parts[i])])
    return rv


def _store(args: argparse.Namespace) -> SilenceStore:
    settings = load_settings(args.config)
    return SilenceStore(Path(settings.data_dir) / "alerts.db")


def _when(text: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SilenceError(f"bad time {text!r}; write it as 2026-01-02T15:04:05Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def cmd_silence_add(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        now = time.time()
        start = _when(args.start) if args.start else now
        end = _when(args.end) if args.end else None
        try:
            duration = parse_duration(args.duration)
        except ValueError as exc:
            raise SilenceError(f"duration: {exc}") from None
        if not args.comment.strip():
            raise SilenceError("comment: say why (-c/--comment)")
        silence = new_silence(
            ",".join(args.matchers),
            created_by=args.author or getpass.getuser(),
            comment=args.comment,
            starts_at=start,
            ends_at=end,
            duration_s=duration,
            now=now,
        )
        print(store.add(silence, now=now))
    except SilenceError as exc:
        print(f"silence add: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_silence_query(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        matchers = [m for text in args.matchers for m in parse_matchers(text)]
        found = store.query(matchers, expired=args.expired)
    except (MatcherSyntaxError, SilenceError) as exc:
        print(f"silence query: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.quiet:
        for s in found:
            print(s.id)
        return 0
    print(f"{'ID':36}  {'Matchers':40}  {'Ends At':23}  {'Created By':12}  Comment")
    for s in found:
        print(f"{s.id:36}  {s.describe():40}  {_iso(s.ends_at):23}  {s.created_by:12}  {s.comment}")
    return 0


def cmd_silence_expire(args: argparse.Namespace) -> int:
    store = _store(args)
    failed = 0
    try:
        for sid in args.ids:
            try:
                store.expire(sid)
            except SilenceError as exc:
                print(f"silence expire: {exc}", file=sys.stderr)
                failed += 1
    finally:
        store.close()
    return 1 if failed else 0
