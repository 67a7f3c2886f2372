"""The haproxy and nginx parsers on lines the real programs wrote (Debian's haproxy, nginx)."""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, require_server
from prometheus_client import CollectorRegistry

from collectors.loop import Collector
from collectors.parsers import PARSERS
from siem.model import EventQuery
from siem.sqlite import SqliteStore
from vigil.haproxy import Server, haproxy_binary, render_config
from vigil.settings import from_mapping


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200 if self.path != "/missing" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _haproxy_lines(
    tmp_path: Path, backend: int, requests: list[tuple[str, dict[str, str]]]
) -> list[bytes]:
    """Run haproxy logging to a UDP socket of ours; the datagrams it sent per request."""
    binary = haproxy_binary()
    if binary is None:
        require_server("haproxy", "the haproxy binary is not installed")
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        f"""global
    log 127.0.0.1:{receiver.getsockname()[1]} local0
defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend web
    bind 127.0.0.1:{port}
    capture request header Host len 64
    capture request header User-Agent len 64
    use_backend empty if {{ path_beg /none }}
    default_backend app
backend app
    server app1 127.0.0.1:{backend}
backend empty
"""
    )
    process = subprocess.Popen(
        [str(binary), "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    error = process.stderr.read() if process.stderr else b""
                    pytest.fail(f"haproxy did not start: {error!r}")
                time.sleep(0.05)
        lines: list[bytes] = []
        for path, headers in requests:
            _get(f"http://127.0.0.1:{port}{path}", headers)
            lines.append(receiver.recv(65535))
        return lines
    finally:
        process.terminate()
        process.wait(10)
        receiver.close()


def test_haproxy_parser_reads_real_httplog_datagrams(tmp_path: Path, backend: int) -> None:
    lines = _haproxy_lines(
        tmp_path,
        backend,
        [("/products?page=2", {"User-Agent": "vigil-test"}), ("/missing", {}), ("/none", {})],
    )
    events = [
        PARSERS["haproxy"](line, source="udp", position=i, offset=0, now=time.time())
        for i, line in enumerate(lines)
    ]
    ok, missing, no_server = (e.doc for e in events)
    assert {e.dataset for e in events} == {"haproxy.log"}
    assert ok["source"]["ip"] == "127.0.0.1"
    assert ok["haproxy"]["frontend_name"] == "web"
    assert (ok["haproxy"]["backend_name"], ok["haproxy"]["server_name"]) == ("app", "app1")
    assert ok["http"]["response"]["status_code"] == 200
    assert ok["http"]["request"]["method"] == "GET"
    assert ok["url"]["original"] == "/products?page=2"
    assert ok["haproxy"]["http"]["request"]["captured_headers"][1] == "vigil-test"
    assert ok["haproxy"]["termination_state"] == "----"
    assert ok["event"]["duration"] >= 0
    assert ok["process"]["name"] == "haproxy"
    assert abs(events[0].timestamp - time.time()) < 300
    assert missing["http"]["response"]["status_code"] == 404
    # No server at all: haproxy answers 503 itself, the server timers are -1.
    assert no_server["http"]["response"]["status_code"] == 503
    assert no_server["haproxy"]["server_name"] == "<NOSRV>"
    assert no_server["haproxy"]["connection_wait_time_ms"] == -1
    assert no_server["haproxy"]["termination_state"].startswith("S")


def _nginx() -> str:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        require_server("nginx", "the nginx binary is not installed (scripts/install-system-deps)")
        raise AssertionError("unreachable")
    return binary


def test_nginx_parsers_read_real_access_and_error_logs(tmp_path: Path, backend: int) -> None:
    binary = _nginx()
    port = free_port()
    (tmp_path / "html").mkdir()
    (tmp_path / "html" / "index.html").write_text("hi")
    (tmp_path / "nginx.conf").write_text(
        f"""daemon off;
master_process off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {tmp_path}/tmp;
    proxy_temp_path {tmp_path}/tmp;
    fastcgi_temp_path {tmp_path}/tmp;
    uwsgi_temp_path {tmp_path}/tmp;
    scgi_temp_path {tmp_path}/tmp;
    log_format vigil_json escape=json '{{"time":"$time_iso8601","remote_addr":"$remote_addr",'
        '"remote_user":"$remote_user","request":"$request","status":$status,'
        '"body_bytes_sent":$body_bytes_sent,"request_time":$request_time,'
        '"http_referer":"$http_referer","http_user_agent":"$http_user_agent",'
        '"request_id":"$request_id","upstream_addr":"$upstream_addr",'
        '"upstream_response_time":"$upstream_response_time","host":"$host"}}';
    access_log {tmp_path}/access.log combined;
    access_log {tmp_path}/access.json vigil_json;
    server {{
        listen 127.0.0.1:{port};
        root {tmp_path}/html;
        location /app/ {{ proxy_pass http://127.0.0.1:{backend}/; }}
    }}
}}
"""
    )
    process = subprocess.Popen(
        [binary, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"nginx did not start: {process.stderr.read() if process.stderr else ''!r}"
                    )
                time.sleep(0.05)
        assert _get(f"http://127.0.0.1:{port}/index.html", {"Referer": "http://x/"}) == 200
        assert _get(f"http://127.0.0.1:{port}/nope?q=1", {"User-Agent": 'say "hi"'}) == 404
        assert _get(f"http://127.0.0.1:{port}/app/x") == 200
    finally:
        process.terminate()
        process.wait(10)
    # The collector reads all three files through collect.files into SQLite.
    settings = from_mapping(
        {
            "data_dir": str(tmp_path / "data"),
            "collect": {
                "tail": [],
                "scrape_stack": False,
                "files": {
                    str(tmp_path / "access.log"): "nginx",
                    str(tmp_path / "access.json"): "nginx",
                    str(tmp_path / "error.log"): "nginx_error",
                },
            },
        }
    )
    store = SqliteStore(tmp_path / "siem.db")
    collector = Collector(settings, store, registry=CollectorRegistry())
    assert collector.run_once()
    access = store.search(EventQuery(dataset="nginx.access", limit=100))
    errors = store.search(EventQuery(dataset="nginx.error", limit=100))
    assert not store.search(EventQuery(dataset="vigil.collector.error", limit=10))
    assert len(access) == 6  # three requests, each in both formats
    by_file: dict[str, list[dict[str, object]]] = {}
    for event in access:
        by_file.setdefault(event.doc["log"]["file"]["path"], []).append(event.doc)
    for docs in by_file.values():
        statuses = sorted(d["http"]["response"]["status_code"] for d in docs)  # type: ignore[index]
        assert statuses == [200, 200, 404]
    json_docs = by_file[str((tmp_path / "access.json").resolve())]
    proxied = next(d for d in json_docs if d["url"]["original"] == "/app/x")  # type: ignore[index]
    assert proxied["nginx"]["access"]["upstream_addr"] == f"127.0.0.1:{backend}"  # type: ignore[index]
    assert proxied["http"]["request"]["id"]  # type: ignore[index]
    combined = by_file[str((tmp_path / "access.log").resolve())]
    referred = next(d for d in combined if d["url"]["original"] == "/index.html")  # type: ignore[index]
    assert referred["http"]["request"]["referrer"] == "http://x/"  # type: ignore[index]
    assert any(e.doc["url"]["original"] == "/nope?q=1" for e in errors)
    assert all(e.doc["source"]["ip"] == "127.0.0.1" for e in errors)


def test_haproxy_config_of_vigil_up_sends_httplog_to_the_collector(
    tmp_path: Path, backend: int
) -> None:
    """haproxy.cfg as `vigil up` renders it with collect.syslog_udp, into the receiver."""
    binary = haproxy_binary()
    if binary is None:
        require_server("haproxy", "the haproxy binary is not installed")
        return
    settings = from_mapping(
        {
            "data_dir": str(tmp_path / "data"),
            "collect": {
                "tail": [],
                "scrape_stack": False,
                "syslog_udp": f"127.0.0.1:{free_port()}",
            },
        }
    )
    store = SqliteStore(tmp_path / "siem.db")
    registry = CollectorRegistry()
    collector = Collector(settings, store, registry=registry)
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        render_config(
            port=port,
            servers=[Server("shop-1", backend)],
            admin_socket=tmp_path / "admin.sock",
            log_target=settings.collect.syslog_udp,
        )
    )
    process = subprocess.Popen(
        [binary, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while _status(f"http://127.0.0.1:{port}/products") != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("haproxy did not serve through the shop backend")
            time.sleep(0.05)
        assert _status(f"http://127.0.0.1:{port}/missing") == 404
        while (
            registry.get_sample_value(
                "vigil_collector_syslog_datagrams_total", {"result": "received"}
            )
            or 0
        ) < 2:
            assert time.monotonic() < deadline, "no datagram reached the collector"
            time.sleep(0.05)
        assert collector.run_once()
    finally:
        process.terminate()
        process.wait(10)
        collector.close()
    events = store.search(EventQuery(dataset="haproxy.log", limit=100))
    assert not store.search(EventQuery(dataset="vigil.collector.error", limit=10))
    statuses = {e.doc["http"]["response"]["status_code"] for e in events}
    assert {200, 404} <= statuses
    assert all(e.doc["haproxy"]["backend_name"] == "shop" for e in events)
    assert all(e.doc["log"]["file"]["path"].startswith("udp://127.0.0.1:") for e in events)


def _status(url: str) -> int:
    try:
        return _get(url)
    except OSError:
        return 0
