"""haproxy in front of the shop: its configuration and its runtime API.

The config is generated from settings (one server per shop instance, health
checked on ``/readyz``); the admin socket lets a deploy drain one server at a
time (``set server shop/shop-1 state drain``) without reloading haproxy.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from vigil.errors import VigilError

BACKEND = "shop"


class HaproxyError(VigilError):
    """The haproxy runtime API refused a command or could not be reached."""


def haproxy_binary() -> str | None:
    """Path of the haproxy executable, None when it is not installed."""
    return shutil.which("haproxy")


@dataclass(frozen=True)
class Server:
    name: str
    port: int


def render_config(
    *,
    port: int,
    servers: list[Server],
    admin_socket: Path,
    metrics_port: int | None = None,
    log_target: str | None = None,
) -> str:
    """haproxy.cfg balancing ``servers`` behind 127.0.0.1:``port``.

    With ``log_target`` (``host:port``, the collector's ``collect.syslog_udp``)
    haproxy sends its HTTP log (``option httplog``) there as syslog datagrams
    (facility local0); connections that send nothing are not logged.

    With ``metrics_port``, a second frontend on it serves haproxy's built-in
    Prometheus exporter at ``/metrics`` (haproxy built with PROMEX, as Debian's
    is) and the stats page at ``/stats``.
    """
    lines = [
        "global",
        f"    stats socket {admin_socket} mode 600 level admin",
        "    maxconn 2048",
        *([f"    log {log_target} local0"] if log_target else []),
        "",
        "defaults",
        "    mode http",
        *(["    log global", "    option httplog", "    option dontlognull"] if log_target else []),
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    # A busy instance answers /readyz slowly; that is no reason to take it out.",
        "    timeout check 5s",
        "    # The shop trusts X-Forwarded-For from loopback: it gets the real client address.",
        "    option forwardfor",
        "    retries 2",
        "    option redispatch",
        "",
        *(_metrics_frontend(metrics_port) if metrics_port is not None else []),
        f"frontend {BACKEND}_front",
        f"    bind 127.0.0.1:{port}",
        "    # The scheme the client used, never one the client claims: the shop marks its",
        "    # cookies Secure from this header (it trusts it from loopback, like the above).",
        "    http-request set-header X-Forwarded-Proto https if { ssl_fc }",
        "    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }",
        f"    default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        "    balance roundrobin",
        "    option httpchk GET /readyz",
        "    http-check expect status 200",
    ]
    lines += [
        f"    server {s.name} 127.0.0.1:{s.port} check inter 1s fall 3 rise 1" for s in servers
    ]
    return "\n".join(lines) + "\n"


def _metrics_frontend(port: int) -> list[str]:
    return [
        "frontend metrics",
        f"    bind 127.0.0.1:{port}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 5s",
        "",
    ]


class HaproxyAdmin:
    """The haproxy runtime API on its admin socket.

    >>> HaproxyAdmin(Path("data/haproxy.sock")).set_state("shop-1", "drain")  # doctest: +SKIP
    """

    def __init__(self, socket_path: Path, *, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def available(self) -> bool:
        return self.socket_path.exists()

    def command(self, line: str) -> str:
        """Send one command and return haproxy's answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise HaproxyError(f"haproxy admin socket {self.socket_path}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace")

    def set_state(self, server: str, state: str) -> None:
        """``ready``, ``drain`` or ``maint`` for one server of the shop backend."""
        if state not in {"ready", "drain", "maint"}:
            raise HaproxyError(f"unknown server state {state!r}; use ready, drain or maint")
        answer = self.command(f"set server {BACKEND}/{server} state {state}").strip()
        if answer:
            raise HaproxyError(f"haproxy refused 'set server {BACKEND}/{server}': {answer}")

    def sessions(self, server: str) -> int:
        """Current sessions (in-flight requests) on one server, from ``show stat``."""
        answer = self.command("show stat")
        header: list[str] = []
        for line in answer.splitlines():
            if line.startswith("# "):
                header = line[2:].split(",")
                continue
            fields = line.split(",")
            if header and len(fields) >= 2 and fields[0] == BACKEND and fields[1] == server:
                return int(dict(zip(header, fields, strict=False)).get("scur") or 0)
        raise HaproxyError(f"haproxy has no server {BACKEND}/{server}")

    def states(self) -> dict[str, str]:
        """Admin state per server, e.g. ``{"shop-1": "UP", "shop-2": "DRAIN"}``."""
        answer = self.command("show stat")
        header: list[str] = []
        rv: dict[str, str] = {}
        for line in answer.splitlines():
            if line.startswith("# "):
                header = line[2:].split(",")
                continue
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == BACKEND and row.get("svname") not in (None, "BACKEND"):
                rv[row["svname"]] = row.get("status", "")
        return rv
