"""``vigil up``: start and supervise the whole stack on one machine.

Children: the shop instances (gunicorn each), haproxy in front of them when
the binary is installed, and the platform processes (collector, alerting, web
UI). haproxy sends its HTTP log to the collector over syslog UDP
(``collect.syslog_udp``, else ``127.0.0.1:<up.syslog_port>``). A child that
dies is restarted with back-off; SIGTERM or Ctrl-C stops everything. A small
control API (``up.control_port``) lets ``vigil deploy`` restart one shop
instance on another release while the rest keep serving:

    GET  /api/instances                      instances with port, release, pid, state
    POST /api/instances/<name>/release       {"release": "v2"} → restart on it, wait ready
    GET  /metrics                            the supervisor's own metrics
    GET  /healthz                            {"status": "ok"}

The API routes take ``Authorization: Bearer <token>``: the token ``vigil up``
writes to ``data/run/control.token`` (0600, new on every start) or a user API
token (``vigil token create``) of the declared role. A request whose Host
header is not ``127.0.0.1:<port>`` or ``localhost:<port>`` is refused (421),
so a web page cannot reach the API through DNS rebinding.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from werkzeug.serving import make_server

from shop.releases import get_release
from shop.server import init_database
from vigil.auth import (
    Principal,
    UserStore,
    control_token_path,
    users_path,
    write_secret_file,
)
from vigil.console import ChildEcho
from vigil.errors import VigilError
from vigil.haproxy import Server, haproxy_binary, render_config
from vigil.settings import Settings
from vigil.webauth import AuthConfig, current_principal, install, public, requires

log = logging.getLogger("vigil.supervisor")

READY_TIMEOUT = 60.0
CONTROL_PRINCIPAL = Principal("vigil-control", "operator", "token")
"""Who a request with ``data/run/control.token`` acts as."""
MAX_BACKOFF = 30.0


class SupervisorError(VigilError):
    """A child could not be started or did not become ready."""


@dataclass
class ChildSpec:
    """How to start one child and how to tell it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    release: str | None = None
    port: int | None = None


@dataclass
class Child:
    spec: ChildSpec
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    backoff: float = 1.0
    next_start: float = 0.0
    # A child being restarted on purpose is not "crashed".
    busy: bool = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_ready(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll ``url`` until it answers 200, the child dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for ``proc`` to exit after its SIGTERM; SIGKILL it after ``timeout`` seconds."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Supervisor:
    """Runs the children of ``vigil up`` until stopped."""

    def __init__(
        self, settings: Settings, *, config: str | None = None, extra: list[ChildSpec] | None = None
    ) -> None:
        self.settings = settings
        self.config = config
        self.data_dir = Path(settings.data_dir).resolve()
        self.run_dir = self.data_dir / "run"
        self.state_file = self.data_dir / "up-state.json"
        self.admin_socket = self.run_dir / "haproxy.sock"
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.registry = CollectorRegistry()
        self.child_up = Gauge(
            "vigil_supervisor_child_up", "1 when the child runs", ["child"], registry=self.registry
        )
        self.restarts = Counter(
            "vigil_supervisor_restarts",
            "Unplanned child restarts",
            ["child"],
            registry=self.registry,
        )
        self._control_token: str | None = None
        self.children: dict[str, Child] = {}
        for spec in self._specs() + (extra or []):
            self.children[spec.name] = Child(spec, self.run_dir / f"{spec.name}.log")

    # -- children ---------------------------------------------------------------------------
    def _cli(self, *args: str) -> list[str]:
        argv = [sys.executable, "-m", "vigil.cli"]
        if self.config:
            argv += ["--config", self.config]
        return argv + list(args)

    def shop_ports(self) -> list[tuple[str, int]]:
        base = self.settings.up.shop_base_port
        return [(f"shop-{n}", base + n - 1) for n in range(1, self.settings.up.shop_instances + 1)]

    def _specs(self) -> list[ChildSpec]:
        releases = self._saved_releases()
        specs = []
        for name, port in self.shop_ports():
            release = releases.get(name, self.settings.shop.release)
            specs.append(
                ChildSpec(
                    name=name,
                    argv=self._cli("shop", "serve"),
                    env={
                        "VIGIL_SHOP_PORT": str(port),
                        "VIGIL_SHOP_RELEASE": release,
                        "VIGIL_DATA_DIR": str(self.data_dir),
                    },
                    ready_url=f"http://127.0.0.1:{port}/readyz",
                    release=release,
                    port=port,
                )
            )
        settings = self.settings
        binary = haproxy_binary()
        platform = [
            ("collect", settings.collect.port, "/metrics"),
            ("alert", settings.alert.port, "/metrics"),
            ("web", settings.web.port, "/healthz"),
        ]
        for command, port, probe in platform:
            env = {"VIGIL_DATA_DIR": str(self.data_dir)}
            target = self.syslog_target(binary)
            if command == "collect" and target and not settings.collect.syslog_udp:
                env["VIGIL_COLLECT_SYSLOG_UDP"] = target
            specs.append(
                ChildSpec(
                    name=command,
                    argv=self._cli(command),
                    env=env,
                    ready_url=f"http://127.0.0.1:{port}{probe}",
                    port=port,
                )
            )
        if binary:
            cfg = self.run_dir / "haproxy.cfg"
            specs.append(
                ChildSpec(
                    name="haproxy",
                    argv=[binary, "-db", "-f", str(cfg)],
                    # Ready when it routes to a shop that is ready: its port answering is
                    # not enough (its checks may not have marked a server up yet, and
                    # the banner's URL would answer 503 for a second).
                    ready_url=f"http://127.0.0.1:{self.settings.up.haproxy_port}/readyz",
                    port=self.settings.up.haproxy_port,
                )
            )
        return specs

    def syslog_target(self, binary: str | None) -> str | None:
        """Where haproxy (``binary``, None when not installed) sends its HTTP log.

        ``collect.syslog_udp`` when set, else ``127.0.0.1:<up.syslog_port>`` (the
        collector child is told to listen there); None without haproxy or with
        port 0.
        """
        if binary is None:
            return None
        if self.settings.collect.syslog_udp:
            return self.settings.collect.syslog_udp
        port = self.settings.up.syslog_port
        return f"127.0.0.1:{port}" if port > 0 else None

    def _write_haproxy_config(self) -> None:
        servers = [Server(name, port) for name, port in self.shop_ports()]
        text = render_config(
            port=self.settings.up.haproxy_port,
            servers=servers,
            admin_socket=self.admin_socket,
            metrics_port=self.settings.up.haproxy_metrics_port,
            log_target=self.syslog_target(self.children["haproxy"].spec.argv[0]),
        )
        (self.run_dir / "haproxy.cfg").write_text(text, encoding="utf-8")

    def _saved_releases(self) -> dict[str, str]:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.get("releases", {}).items() if isinstance(v, str)}

    def _save_releases(self) -> None:
        releases = {n: c.spec.release for n, c in self.children.items() if c.spec.release}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"releases": releases}, indent=2), encoding="utf-8")
        tmp.replace(self.state_file)

    def _start(self, child: Child) -> None:
        env = dict(os.environ)
        # Children write to run/<name>.log: JSON there, whatever the terminal gets.
        env["VIGIL_LOG_FORMAT"] = "json"
        env.update(child.spec.env)
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        with child.log_path.open("ab") as out:
            child.proc = subprocess.Popen(
                child.spec.argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.child_up.labels(child.spec.name).set(1)
        log.info(
            "started %s (pid %s)",
            child.spec.name,
            child.proc.pid,
            extra={"labels.child": child.spec.name},
        )

    def _terminate(self, child: Child, timeout: float = 15.0) -> None:
        proc = child.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        _reap(proc, timeout)
        self.child_up.labels(child.spec.name).set(0)

    def start_all(self) -> None:
        """Start every child; wait until the shops are ready."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Once, before the shops start: two instances creating tables at once would race.
        init_database(self.settings)
        if "haproxy" in self.children:
            self._write_haproxy_config()
        with self._lock:
            for child in self.children.values():
                self._start(child)
        for child in self.children.values():
            url = child.spec.ready_url
            if url and not wait_ready(url, READY_TIMEOUT, lambda c=child: c.running):  # type: ignore[misc]
                raise SupervisorError(
                    f"{child.spec.name} did not become ready at {url}; see {child.log_path}"
                )
        self._save_releases()

    def check_children(self, now: float | None = None) -> None:
        """Restart children that died, with exponential back-off."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for child in self.children.values():
                if child.busy or child.running:
                    if child.running and now >= child.next_start + 60:
                        child.backoff = 1.0  # it stayed up a minute: forgive earlier crashes
                    continue
                if child.proc is not None and now < child.next_start:
                    continue
                if child.proc is not None:
                    code = child.proc.returncode
                    log.warning(
                        "%s exited with %s; restarting",
                        child.spec.name,
                        code,
                        extra={"labels.child": child.spec.name},
                    )
                    self.restarts.labels(child.spec.name).inc()
                    child.restarts += 1
                self.child_up.labels(child.spec.name).set(0)
                self._start(child)
                child.next_start = now + child.backoff
                child.backoff = min(child.backoff * 2, MAX_BACKOFF)

    def set_release(
        self, name: str, release: str, timeout: float = READY_TIMEOUT
    ) -> dict[str, Any]:
        """Restart shop instance ``name`` on ``release`` and wait until it is ready."""
        get_release(release)
        child = self.children.get(name)
        if child is None or child.spec.release is None:
            raise SupervisorError(
                f"no shop instance {name!r}; instances: "
                f"{', '.join(n for n, _ in self.shop_ports())}"
            )
        with self._lock:
            child.busy = True
        try:
            before = child.spec.release
            old = child.proc
            if old is not None and old.poll() is None:
                old.send_signal(signal.SIGTERM)
            child.spec.release = release
            child.spec.env["VIGIL_SHOP_RELEASE"] = release
            # The new process starts at once: it imports and opens the database while the
            # old one (drained, stopping) finishes, and gunicorn retries its bind until the
            # old one lets the port go. Waiting for the exit first cost seconds per instance.
            self._start(child)
            assert child.spec.ready_url is not None
            ready = wait_ready(child.spec.ready_url, timeout, lambda: child.running)
            if old is not None:
                _reap(old, 15.0)
            if not ready and not child.running:
                # The old process held the port past gunicorn's bind retries: once more,
                # now that it is gone.
                self._start(child)
                ready = wait_ready(child.spec.ready_url, timeout, lambda: child.running)
            if not ready:
                raise SupervisorError(
                    f"{name} did not become ready on {release}; see {child.log_path}"
                )
            self._save_releases()
            return {"instance": name, "release_before": before, "release_after": release}
        finally:
            child.busy = False

    def instances(self) -> list[dict[str, Any]]:
        return [
            {
                "name": c.spec.name,
                "port": c.spec.port,
                "release": c.spec.release,
                "pid": c.proc.pid if c.proc else None,
                "state": "running" if c.running else "stopped",
                "restarts": c.restarts,
            }
            for c in self.children.values()
            if c.spec.release is not None
        ]

    def stop_all(self) -> None:
        with self._lock:
            for child in reversed(list(self.children.values())):
                self._terminate(child)

    # -- control API --------------------------------------------------------------------------
    def control_token(self) -> str:
        """This run's control API token, written once to ``data/run/control.token`` (0600)."""
        if self._control_token is None:
            self._control_token = secrets.token_urlsafe(32)
            write_secret_file(control_token_path(self.settings), self._control_token)
        return self._control_token

    def control_app(self) -> Flask:
        """The control API (see the module docstring), every route guarded by a role."""
        # No static files: the control API serves JSON only.
        app = Flask("vigil.supervisor", static_folder=None)
        port = self.settings.up.control_port
        install(
            app,
            AuthConfig(
                users=UserStore(users_path(self.settings)),
                static_tokens={self.control_token(): CONTROL_PRINCIPAL},
                allowed_hosts=frozenset({f"127.0.0.1:{port}", f"localhost:{port}"}),
            ),
        )

        @app.get("/api/instances")
        @requires("viewer")
        def instances() -> Any:
            return {"instances": self.instances()}

        @app.post("/api/instances/<name>/release")
        @requires("operator")
        def release(name: str) -> Any:
            body = request.get_json(silent=True) or {}
            wanted = body.get("release") if isinstance(body, dict) else None
            if not isinstance(wanted, str):
                return jsonify(error='send {"release": "v1"}'), 400
            who = current_principal()
            actor = who.name if who else "?"
            log.info(
                "release %s for %s requested by %s",
                wanted,
                name,
                actor,
                extra={"user.name": actor, "labels.child": name},
            )
            try:
                return self.set_release(name, wanted)
            except VigilError as exc:
                return jsonify(error=str(exc)), 409

        @app.get("/metrics")
        @public
        def metrics() -> Response:
            return Response(generate_latest(self.registry), content_type="text/plain")

        @app.get("/healthz")
        @public
        def healthz() -> Any:
            return {"status": "ok"}

        return app

    def run(
        self, on_ready: Callable[[], None] | None = None, *, echo: TextIO | None = None
    ) -> None:
        """Start everything, serve the control API, supervise until SIGTERM/SIGINT.

        With ``echo`` (a terminal), the children's log lines are shown there as human lines.
        """
        console = None
        if echo is not None:
            console = ChildEcho({n: c.log_path for n, c in self.children.items()}, echo)
            console.start()
        server = make_server(
            "127.0.0.1", self.settings.up.control_port, self.control_app(), threaded=True
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()

        def stop(_signum: int, _frame: Any) -> None:
            self._stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            self.start_all()
            if on_ready is not None:
                on_ready()
            while not self._stop.wait(0.5):
                self.check_children()
        finally:
            server.shutdown()
            self.stop_all()
            if console is not None:
                console.stop()
            # The token dies with this run; a stale file would only mislead `vigil deploy`.
            control_token_path(self.settings).unlink(missing_ok=True)
