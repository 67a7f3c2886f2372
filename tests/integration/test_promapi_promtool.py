"""The real ``promtool query instant|range|series|labels`` against a running ``vigil web``.

promtool (Debian's 2.42) is Prometheus' own client: it parses the responses
with client_golang's API client, so a wrong envelope, type name or value
encoding fails here. It authenticates as Grafana can: Basic auth from the
URL's user info (an API token as the password) for the subcommands that take
no headers, ``--header Authorization=Bearer …`` for ``range``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, http_get, require_server, wait_until
from exposition_server import exposition_server
from prometheus_client import CollectorRegistry

from collectors.metrics import CollectorMetrics
from collectors.prometheus import Scraper, Target
from dashboards.app import create_app
from siem.backends import open_store
from siem.model import Sample, make_labels
from siem.sqlite import SqliteStore
from vigil.auth import UserStore, users_path
from vigil.settings import from_mapping

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
SHOP_A = {"job": "shop", "instance": "a:1"}
SHOP_B = {"job": "shop", "instance": "b:2"}


@dataclass
class Web:
    port: int
    token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def basic_url(self) -> str:
        """The server URL with the token as a Basic password (promtool's only way for
        instant, series and labels in 2.42)."""
        return f"http://grafana:{self.token}@127.0.0.1:{self.port}"


def _samples() -> list[Sample]:
    rv = []
    for i in range(21):  # every 15 s for 5 minutes
        t = T0 + 15 * i
        rv.append(Sample(make_labels("up", **SHOP_A), t, 1.0))
        rv.append(Sample(make_labels("up", **SHOP_B), t, 0.0 if i >= 10 else 1.0))
        labels = make_labels("shop_http_requests_total", route="/api/cart", **SHOP_A)
        rv.append(Sample(labels, t, 100.0 + 30.0 * i))  # 2 per second
    return rv


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        require_server("promtool", "not installed (scripts/install-system-deps installs it)")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    data = tmp_path_factory.mktemp("promapi")
    settings = from_mapping({"data_dir": str(data)})
    store = open_store(settings)
    store.write(samples=_samples())
    store.close()
    _, token = UserStore(users_path(settings)).create_token("grafana", "viewer")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["VIGIL_DATA_DIR"] = str(data)
    port = free_port()
    argv = [sys.executable, "-m", "vigil.cli", "web", "--port", str(port)]
    # Its JSON log lines go to a file: a pipe nobody reads would fill and block it.
    with (data / "web.stderr").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=log)
    try:
        _wait_serving(proc, f"http://127.0.0.1:{port}/healthz", "vigil web")
        yield Web(port, token)
    finally:
        _stop(proc)


def _serving(proc: subprocess.Popen[bytes], url: str) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"exited with {proc.returncode} before serving {url}")
    try:
        return http_get(url, timeout=2)[0] == 200
    except OSError:
        return False


def _wait_serving(proc: subprocess.Popen[bytes], url: str, what: str) -> None:
    wait_until(f"{what} to answer {url}", lambda: _serving(proc, url), 30)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "query", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _promtool(promtool: str, *args: str) -> str:
    """What ``promtool query ARGS`` prints; it must succeed."""
    done = _run(promtool, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def _promtool_error(promtool: str, *args: str) -> str:
    """What ``promtool query ARGS`` says on stderr; it must fail."""
    done = _run(promtool, *args)
    assert done.returncode != 0, (args, done.stdout)
    return done.stderr


def test_promtool_query_instant_vector_and_scalar(promtool: str, web: Web) -> None:
    at = str(int(T0 + 300))
    out = _promtool(promtool, "instant", "--time", at, web.basic_url, "up")
    assert out.splitlines() == [
        f'up{{instance="a:1", job="shop"}} => 1 @[{at}]',
        f'up{{instance="b:2", job="shop"}} => 0 @[{at}]',
    ]
    expr = "sum by (route) (shop_http_requests_total)"
    total = _promtool(promtool, "instant", "--time", at, web.basic_url, expr)
    assert total.splitlines() == [f'{{route="/api/cart"}} => 700 @[{at}]']
    scalar = _promtool(promtool, "instant", "--time", "4", web.basic_url, "1 + 1")
    assert scalar.strip() == "scalar: 2 @[4]"


def test_promtool_query_instant_range_vector(promtool: str, web: Web) -> None:
    """A range vector answers a matrix of raw points, which promtool prints as such."""
    at = str(int(T0 + 300))
    out = _promtool(promtool, "instant", "--time", at, web.basic_url, 'up{instance="b:2"}[30s]')
    assert out.splitlines() == [
        'up{instance="b:2", job="shop"} =>',
        "0 @[1700000285]",
        "0 @[1700000300]",
    ]


def test_promtool_query_instant_json_output_rfc3339_time(promtool: str, web: Web) -> None:
    out = _promtool(
        promtool, "instant", "-o", "json", "--time", "2023-11-14T22:17:50Z", web.basic_url, "up"
    )
    # 2023-11-14T22:17:50Z is T0 + 270, where b:2 is already down.
    assert '"value":[1700000270,"1"]' in out and '"value":[1700000270,"0"]' in out


def test_promtool_query_range_with_bearer_header(promtool: str, web: Web) -> None:
    out = _promtool(
        promtool,
        "range",
        "--header",
        f"Authorization=Bearer {web.token}",
        "--start",
        str(int(T0 + 120)),
        "--end",
        str(int(T0 + 180)),
        "--step",
        "30s",
        web.url,
        'up{instance="b:2"}',
    )
    start = int(T0 + 120)
    assert out.splitlines() == [
        'up{instance="b:2", job="shop"} =>',
        f"1 @[{start}]",
        f"0 @[{start + 30}]",  # down from T0 + 150 on
        f"0 @[{start + 60}]",
    ]


def test_promtool_query_series_and_labels(promtool: str, web: Web) -> None:
    window = ["--start", str(int(T0)), "--end", str(int(T0 + 300))]
    series = _promtool(promtool, "series", "--match", "up", *window, web.basic_url)
    assert series.splitlines() == [
        '{__name__="up", instance="a:1", job="shop"}',
        '{__name__="up", instance="b:2", job="shop"}',
    ]
    names = _promtool(promtool, "labels", *window, web.basic_url, "__name__")
    assert names.splitlines() == ["shop_http_requests_total", "up"]
    routes = _promtool(
        promtool, "labels", "--match", "shop_http_requests_total", *window, web.basic_url, "route"
    )
    assert routes.splitlines() == ["/api/cart"]


def test_promtool_reports_a_bad_query_as_prometheus_would(promtool: str, web: Web) -> None:
    said = _promtool_error(promtool, "instant", "--time", "4", web.basic_url, "sum(up")
    assert "bad_data" in said and "unclosed left parenthesis" in said


def test_promtool_without_credentials_is_refused(promtool: str, web: Web) -> None:
    said = _promtool_error(promtool, "instant", "--time", "4", web.url, "up")
    assert "401" in said or "unauthorized" in said, said


# -- the same requests to a real Prometheus ----------------------------------------------------

SAME_ANSWER = [
    "/api/v1/query?query=1%2B1&time=4",
    "/api/v1/query?query=1+%2B+1&time=4",
    "/api/v1/query?query=time()&time=1700000000.1234",
    "/api/v1/query?query=1/0&time=4",
    "/api/v1/query?query=-1/0&time=4",
    "/api/v1/query?query=0/0&time=4",
    "/api/v1/query?query=no_such_metric&time=4",
    "/api/v1/query?query=up[5m]&time=4",
    "/api/v1/query?query=vector(1)[1m:30s]&time=100",
    "/api/v1/query?query=sum(no_such_metric)[5m:1m]&time=400",
    "/api/v1/query?query=%22a%20string%22&time=4",
    "/api/v1/query_range?query=no_such_metric&start=1&end=100&step=15s",
    "/api/v1/series?match[]=no_such_metric&start=1&end=100",
    "/api/v1/label/no_such_label/values?start=1&end=100",
    "/api/v1/series?match[]=up&start=1700000300&end=1700000000",
    "/api/v1/labels?start=1700000300&end=1700000000",
    "/api/v1/query?query=up&time=1700000000&timeout=abc",
    "/api/v1/series?match[]=no_such_metric",
    "/api/v1/label/no_such_label/values",
    "/api/v1/metadata",
    "/api/v1/metadata?limit=0",
    "/api/v1/metadata?metric=no_such_metric&limit=-1",
    "/api/v1/query_exemplars?query=up&start=1&end=2",
    "/api/v1/format_query?query=sum(rate(x[5m]))by(job)",
]
SAME_ERROR = [
    "/api/v1/query?query=sum(",
    "/api/v1/query?query=up&time=abc",
    "/api/v1/query",
    "/api/v1/query_range?query=up&start=0",
    "/api/v1/query_range?query=up&start=0&end=1",
    "/api/v1/query_range?query=up&start=0&end=10&step=0",
    "/api/v1/query_range?query=up&start=10&end=0&step=1",
    "/api/v1/query_range?query=up&start=0&end=100000&step=1",
    "/api/v1/query_range?query=up&start=0&end=10&step=abc",
    "/api/v1/series",
    "/api/v1/series?match[]=1",
    '/api/v1/series?match[]={a=~""}',
    "/api/v1/label/1a/values",
    "/api/v1/format_query?query=sum(",
    "/api/v1/metadata?limit=x",
]


@contextmanager
def _prometheus(tmp: Path, config: str) -> Iterator[str]:
    """A real Prometheus with ``config`` as its prometheus.yml, ready; its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        require_server("prometheus", "not installed (scripts/install-system-deps installs it)")
    assert binary is not None
    (tmp / "prometheus.yml").write_text(config, encoding="utf-8")
    port = free_port()
    argv = [
        binary,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_serving(proc, f"{url}/-/ready", "prometheus")
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = "global:\n  scrape_interval: 15s\n"
    with _prometheus(tmp_path_factory.mktemp("prometheus"), config) as url:
        yield url


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    status, body = http_get(url.replace("{", "%7B").replace("}", "%7D"), 30, token)
    return status, json.loads(body)


@pytest.mark.parametrize("path", SAME_ANSWER)
def test_same_answer_as_prometheus(prometheus: str, web: Web, path: str) -> None:
    want = _get(prometheus + path)
    assert _get(web.url + path, web.token) == want


def test_promtool_fails_on_a_string_answer_as_with_prometheus(
    promtool: str, prometheus: str, web: Web
) -> None:
    """promtool 2.42 cannot decode a string result; it fails the same way on both."""
    theirs = _promtool_error(promtool, "instant", "--time", "4", prometheus, '"a string"')
    ours = _promtool_error(promtool, "instant", "--time", "4", web.basic_url, '"a string"')
    assert ours == theirs
    assert 'unexpected value type "string"' in ours


@pytest.mark.parametrize("path", SAME_ERROR)
def test_same_error_type_and_status_as_prometheus(prometheus: str, web: Web, path: str) -> None:
    status, body = _get(prometheus + path)
    got_status, got = _get(web.url + path, web.token)
    assert (got_status, got["status"], got["errorType"]) == (status, "error", body["errorType"])
    assert set(got) == set(body)  # status, errorType, error: nothing more, nothing less


# -- metadata: Prometheus and Vigil's collector scrape the same target -------------------------

EXPORTED = """\
# HELP demo_requests_total Requests served, with a \\\\ and a\\nnewline.
# TYPE demo_requests_total counter
demo_requests_total{code="200"} 3
# HELP demo_latency_seconds Latency.
# TYPE demo_latency_seconds histogram
demo_latency_seconds_bucket{le="0.1"} 1
demo_latency_seconds_bucket{le="+Inf"} 2
demo_latency_seconds_sum 0.3
demo_latency_seconds_count 2
# TYPE demo_temperature gauge
demo_temperature 21.5
# HELP demo_untyped Something.
# TYPE demo_untyped untyped
demo_untyped 1
# HELP demo_help_only Only help.
demo_help_only 1
demo_bare 1
"""


def test_metadata_same_as_prometheus_scraping_the_same_target(tmp_path: Path) -> None:
    with exposition_server(lambda: EXPORTED) as exporter:
        config = (
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: demo\n"
            f"    static_configs:\n      - targets: ['{exporter}']\n"
        )
        with _prometheus(tmp_path, config) as prometheus:
            url = f"{prometheus}/api/v1/metadata"
            wait_until("prometheus to scrape", lambda: bool(_get(url)[1].get("data")), 30)
            want = _get(url)[1]
        got = _vigil_metadata(tmp_path, exporter)
    assert got == want
    assert "demo_requests_total" in want["data"]  # type: ignore[operator]


def _vigil_metadata(tmp_path: Path, exporter: str) -> Any:
    """Vigil's collector scrapes ``exporter`` once; then what ``/api/v1/metadata`` answers."""
    store = SqliteStore(tmp_path / "siem.db")
    try:
        target = Target("demo", exporter, f"http://{exporter}/metrics", 5.0)
        Scraper([target], CollectorMetrics(CollectorRegistry()), store=store).collect()
        settings = from_mapping({"data_dir": str(tmp_path)})
        client = create_app(settings, store=store).test_client()
        token = UserStore(users_path(settings)).create_token("grafana", "viewer")[1]
        return client.get(
            "/api/v1/metadata", headers={"Authorization": f"Bearer {token}"}
        ).get_json()
    finally:
        store.close()
