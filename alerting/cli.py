"""``vigil alert [--once]`` (the evaluator process), ``vigil rules check FILE...``,
``vigil rules test FILE...`` (Prometheus' rule unit tests) and ``vigil slo
check|generate FILE`` (SLOs to recording rules and burn-rate alerts)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from prometheus_client import REGISTRY, CollectorRegistry
from werkzeug.serving import BaseWSGIServer

from alerting.am.cli import ack_commands
from alerting.am.cli import add_commands as am_commands
from alerting.am.config import AMConfig, load_config
from alerting.am.dispatch import AlertManager
from alerting.engine import AlertEngine
from alerting.notify.base import GroupNotifier, Notifier
from alerting.notify.email import EmailNotifier, config_from_settings
from alerting.notify.slack import SlackNotifier
from alerting.notify.webhook import WebhookNotifier
from alerting.promql import Engine
from alerting.rules import Issue, check_files, expand
from alerting.slo import SloRuleSource, check_slo_files, to_yaml
from alerting.state import AlertBook, AlertDB
from siem.backends import open_store
from siem.model import Event, Store
from vigil.auth import UserStore, users_path
from vigil.logging import setup_logging
from vigil.settings import Settings, load_settings

log = logging.getLogger("vigil.alert")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``alert`` and ``rules check`` to the ``vigil`` command line."""
    alert = sub.add_parser("alert", help="evaluate alert rules and send notifications")
    alert.add_argument(
        "--once", action="store_true", help="evaluate every rule once, notify, then exit"
    )
    alert.set_defaults(func=cmd_alert)
    ack_commands(alert.add_subparsers(dest="alert_command", metavar="{ack}"))
    rules = sub.add_parser("rules", help="alert rule files")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate rule files (file:line for each issue)")
    check.add_argument(
        "files", nargs="*", metavar="FILE", help="rule files (default: alert.rules globs)"
    )
    check.set_defaults(func=cmd_rules_check)
    test = rules_sub.add_parser(
        "test", help="run rule unit tests in promtool's format (exit 1 when any fails)"
    )
    test.add_argument("files", nargs="+", metavar="FILE", help="rule test files")
    test.set_defaults(func=cmd_rules_test)
    slo = sub.add_parser("slo", help="SLO files: burn-rate alerts and recording rules")
    slo_sub = slo.add_subparsers(dest="slo_command", required=True)
    slo_check = slo_sub.add_parser("check", help="validate SLO files (file:line for each issue)")
    slo_check.add_argument(
        "files", nargs="*", metavar="FILE", help="SLO files (default: alert.slos globs)"
    )
    slo_check.set_defaults(func=cmd_slo_check)
    generate = slo_sub.add_parser(
        "generate", help="print the Prometheus rule file generated from SLO files"
    )
    generate.add_argument("files", nargs="+", metavar="FILE", help="SLO files")
    generate.add_argument("-o", "--output", metavar="RULES", help="write to this file")
    generate.set_defaults(func=cmd_slo_generate)
    am_commands(sub)


def web_url(settings: Settings) -> str:
    """The web UI's base URL, where relative runbook links and alert links point."""
    return f"http://{settings.web.host}:{settings.web.port}/"


def notifiers(settings: Settings) -> list[Notifier]:
    """Slack when a token is set, e-mail when ``alert.email.to`` is, plus one webhook
    notifier per configured URL."""
    rv: list[Notifier] = []
    slack = settings.alert.slack
    if slack.token:
        rv.append(SlackNotifier(slack.token, slack.channel, api_url=slack.api_url))
    if settings.alert.email.to:
        config = config_from_settings(settings.alert.email, env=os.environ)
        rv.append(EmailNotifier(config, external_url=web_url(settings)))
    for url in settings.alert.webhooks:
        rv.append(WebhookNotifier(url, external_url=web_url(settings)))
    return rv


def integrations(cfg: AMConfig, settings: Settings) -> dict[str, list[GroupNotifier]]:
    """The notifiers of each receiver of an Alertmanager configuration.

    Slack posts through the Web API with ``alert.slack``'s token and API URL (so the
    message can be edited as the group changes) to the entry's ``channel``; Slack and
    e-mail render the entry's templates with the configuration's ``templates``; a webhook
    gets the v4 payload; an ``email_configs`` entry is one mail per group notification
    over SMTP. The other integrations (PagerDuty, …) are not delivered: they are logged
    once at start."""
    rv: dict[str, list[GroupNotifier]] = {}
    slack = settings.alert.slack
    for receiver in cfg.receivers.values():
        items: list[GroupNotifier] = []
        for i, sc in enumerate(receiver.slack):
            if not slack.token:
                log.warning(
                    "receiver %s: no Slack token (VIGIL_SLACK_TOKEN); skipped", receiver.name
                )
                continue
            items.append(
                SlackNotifier(
                    slack.token,
                    sc.channel or slack.channel,
                    api_url=slack.api_url,
                    name=f"{receiver.name}/slack/{i}",
                    send_resolved=sc.send_resolved,
                    config=sc.fields,
                    templates=cfg.notification_templates,
                )
            )
        for i, wc in enumerate(receiver.webhook):
            url = wc.url
            if not url and wc.url_file:
                try:
                    url = Path(wc.url_file).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    log.error("receiver %s: cannot read url_file: %s", receiver.name, exc)
                    continue
            items.append(
                WebhookNotifier(
                    url,
                    name=f"{receiver.name}/webhook/{i}",
                    external_url=web_url(settings),
                    timeout_s=wc.timeout_s or 10.0,
                    send_resolved=wc.send_resolved,
                    max_alerts=wc.max_alerts,
                )
            )
        for i, ec in enumerate(receiver.email):
            items.append(
                EmailNotifier(
                    ec,
                    name=f"{receiver.name}/email/{i}",
                    external_url=web_url(settings),
                    templates=cfg.notification_templates,
                )
            )
        if receiver.unsupported:
            kinds = ", ".join(sorted(set(receiver.unsupported)))
            log.warning("receiver %s: %s not delivered by this version", receiver.name, kinds)
        rv[receiver.name] = items
    return rv


def alert_manager(
    settings: Settings, registry: CollectorRegistry = REGISTRY
) -> AlertManager | None:
    """The alert manager when ``alert.alertmanager_config`` names a file; a bad file
    raises ``AMConfigError`` (the process refuses to start)."""
    path = settings.alert.alertmanager_config
    if not path:
        return None
    cfg = load_config(path)
    for section, kind, used in (
        ("alert.webhooks", "webhook_configs", settings.alert.webhooks),
        ("alert.email", "email_configs", settings.alert.email.to),
    ):
        if used:
            log.warning(
                "%s is not used with alert.alertmanager_config: add it to %s as %s",
                section,
                path,
                kind,
            )
    return AlertManager(
        cfg,
        Path(settings.data_dir) / "alerts.db",
        integrations(cfg, settings),
        external_url=web_url(settings),
        queue_size=settings.alert.notify_queue_size,
        max_backoff_s=settings.alert.notify_max_backoff_s,
        config_path=path,
        build_integrations=lambda c: integrations(c, settings),
        registry=registry,
    )


def serve(
    settings: Settings, manager: AlertManager | None, store: Store, reload: Callable[[], str]
) -> Callable[[], None]:
    """Serve ``alert.port`` (127.0.0.1): ``/metrics``, ``/-/healthy``, ``/-/ready`` and
    ``POST /-/reload`` (``reload``, ``alerting.lifecycle``) — with the alert manager, also
    its Alertmanager API v2 (``alerting.am.api``); returns the function that stops it."""
    from werkzeug.serving import make_server

    from alerting.am.api import create_app
    from alerting.lifecycle import lifecycle_app

    users = UserStore(users_path(settings))
    audit_lock = threading.Lock()

    def audit(event: Event) -> None:  # from the server's request threads
        with audit_lock:
            store.write(events=[event])

    if manager is None:
        app = lifecycle_app(users, reload, audit=audit)
    else:
        app = create_app(manager, users, audit=audit, reload=reload)
    http = make_server("127.0.0.1", settings.alert.port, app, threaded=True)
    threading.Thread(target=http.serve_forever, name="alert-http", daemon=True).start()
    if manager is not None:
        log.info("Alertmanager API v2 on http://127.0.0.1:%d/api/v2/", settings.alert.port)
    return http.shutdown


def slack_interactivity(settings: Settings, manager: AlertManager | None) -> BaseWSGIServer | None:
    """Serve Slack's button endpoint (``POST /slack/actions``) in a thread when the alert
    manager runs and ``$VIGIL_SLACK_SIGNING_SECRET`` is set; audit events go to the store."""
    slack = settings.alert.slack
    if manager is None or not slack.signing_secret:
        return None
    from werkzeug.serving import make_server

    from alerting.am.slack_actions import create_app
    from playbooks.context import RunContext, default_context

    audit_store = open_store(settings)
    audit_lock = threading.Lock()

    def audit(event: Event) -> None:
        with audit_lock:
            audit_store.write(events=[event])

    def playbook_context(actor: str, out: Callable[[str], None]) -> RunContext:
        return dataclasses.replace(default_context(settings, actor), out=out)

    app = create_app(
        manager,
        signing_secret=slack.signing_secret,
        audit=audit,
        users=slack.users,
        roles=slack.roles,
        default_role=slack.default_role,
        playbook_context=playbook_context,
    )
    server = make_server(slack.interactivity_host, slack.interactivity_port, app, threaded=True)
    threading.Thread(target=server.serve_forever, name="slack-actions", daemon=True).start()
    log.info(
        "slack interactivity on http://%s:%d/slack/actions",
        slack.interactivity_host,
        slack.interactivity_port,
    )
    return server


def cmd_alert(args: argparse.Namespace) -> int:
    """Run the evaluator; bad rule files refuse the start (exit 2 with file:line)."""
    settings = load_settings(args.config)
    setup_logging("alert", data_dir=settings.data_dir, log_format=getattr(args, "log_format", None))
    source = SloRuleSource(
        settings.alert.rules, settings.alert.slos, default_interval=settings.alert.interval_s
    )
    groups = source.load()
    manager = alert_manager(settings)
    store = open_store(settings)
    db = AlertDB(Path(settings.data_dir) / "alerts.db")
    try:
        engine = AlertEngine(
            store,
            groups,
            AlertBook(db),
            notifiers(settings) if manager is None else [],
            evaluator=Engine(
                store, max_samples=settings.query.max_samples, timeout_s=settings.query.timeout_s
            ),
            runbook_base_url=settings.alert.runbook_base_url or web_url(settings),
            source=source,
            queue_size=settings.alert.notify_queue_size,
            max_backoff_s=settings.alert.notify_max_backoff_s,
            external_url=web_url(settings),
            manager=manager,
            cache_max_samples=settings.alert.cache_max_samples,
            cache_max_window_s=settings.alert.cache_max_window_s,
        )
        log.info(
            "alerting: %d rules in %d groups",
            sum(len(g.rules) for g in groups),
            len(groups),
        )
        if args.once:
            engine.run_once()
            return 0
        shutdown = serve(settings, manager, store, engine.request_reload)
        interactivity = slack_interactivity(settings, manager)
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("stopping on %s", signal.Signals(signum).name)
            stop.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            # As Prometheus and Alertmanager: SIGHUP reloads (systemd's ExecReload), where
            # its default action would end the process. The loop reloads within a second.
            log.info("SIGHUP: reading the rule, SLO and Alertmanager files again")
            source.mark_stale()
            if manager is not None:
                manager.mark_stale()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_hup)
        try:
            engine.run(stop)
        finally:
            shutdown()
            if interactivity is not None:
                interactivity.shutdown()
        return 0
    finally:
        db.close()
        store.close()
        if manager is not None:
            manager.close()


def cmd_rules_check(args: argparse.Namespace) -> int:
    """Print every issue as ``file:line: severity: message``; 1 when any is an error."""
    settings = load_settings(args.config)
    files = [Path(f) for f in args.files] or expand(settings.alert.rules)
    if not files:
        print(f"no rule files match {', '.join(settings.alert.rules)}")
        return 1
    issues = check_files(files, default_interval=settings.alert.interval_s)
    return _report(issues, len(files))


def _report(issues: list[Issue], files: int) -> int:
    for issue in issues:
        print(issue)
    errors = sum(1 for i in issues if i.severity == "error")
    warnings = len(issues) - errors
    print(f"{files} file(s) checked: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


def cmd_slo_check(args: argparse.Namespace) -> int:
    """Print every issue of the SLO files as ``file:line: severity: message``."""
    settings = load_settings(args.config)
    files = [Path(f) for f in args.files] or expand(settings.alert.slos)
    if not files:
        print(f"no SLO files match {', '.join(settings.alert.slos)}")
        return 1
    slos, issues = check_slo_files(files)
    code = _report(issues, len(files))
    if not code:
        print(f"{len(slos)} SLO(s): {', '.join(s.name for s in slos)}")
    return code


def cmd_slo_generate(args: argparse.Namespace) -> int:
    """Write the generated rule file to stdout or ``-o``; errors go to stderr (exit 1)."""
    slos, issues = check_slo_files([Path(f) for f in args.files])
    errors = [i for i in issues if i.severity == "error"]
    for issue in issues:
        print(issue, file=sys.stderr)
    if errors:
        return 1
    text = to_yaml(slos, " ".join(args.files))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"{args.output}: {len(slos)} SLO(s)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_rules_test(args: argparse.Namespace) -> int:
    """Run promtool-format rule tests; report like ``promtool test rules``."""
    from alerting.ruletest import run_files

    logging.getLogger("alerting").setLevel(logging.ERROR)  # failures are in the report
    return run_files(args.files, sys.stdout, sys.stderr)
