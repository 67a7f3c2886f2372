"""`make run` on a fresh clone: the stack starts, prints its URLs, and the
overview page shows live data within a minute.

Runs `python -m vigil.cli up` as `make run` does (repo root, config/vigil.yaml,
the shipped 5 s collect and alert intervals), only with a fresh data dir and
free ports. A few dozen shopper GETs go through haproxy, and Chromium opens the
dashboards URL from the banner, logs in with the admin password the banner
shows once, and waits until the request-rate chart is drawn and the release
table says v1 (no console error, no CSP violation), all from the stack's own
SQLite store. Prints the time from launch to a live overview.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import browser_login, control_token, http_get, require_server, up_env, watch_console

from vigil.auth import UserStore
from vigil.haproxy import haproxy_binary

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
# The bound: from `vigil up` starting to the overview showing data.
LIVE_WITHIN = 60.0
# Shopper traffic: this many GETs spread over this many seconds after the banner.
SHOPPER_GETS = 40
SHOPPER_SECONDS = 20.0
# Where the leftmost pixel of a series line sits on the request-rate canvas, as
# a fraction of its width (series are drawn in the page's COLORS; grid and axes
# are grey or black).
LEFTMOST_LINE_JS = """
() => {
  const canvas = document.querySelector("#panel-request-rate canvas");
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    .map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
  const { width, height } = canvas;
  const px = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const i = (y * width + x) * 4;
      if (px[i + 3] > 200 && colors.some((c) =>
          Math.abs(c[0] - px[i]) + Math.abs(c[1] - px[i + 1]) + Math.abs(c[2] - px[i + 2]) < 40)) {
        return x / width;
      }
    }
  }
  return null;
}
"""

# What a person sees once the overview is live: the request-rate chart is drawn
# (a canvas, no "no data" note, a legend entry per shop route) and the release
# table lists v1 for every instance.
OVERVIEW_LIVE_JS = """() => {
  const rate = document.querySelector("#panel-request-rate");
  if (!rate || !rate.querySelector("canvas")) return false;
  if (rate.querySelector(".empty").textContent !== "") return false;
  if (rate.querySelector(".error").textContent !== "") return false;
  const routes = [...rate.querySelectorAll(".u-legend .u-series .u-label")]
    .map((n) => n.textContent);
  if (!routes.includes("/api/products")) return false;
  const releases = [...document.querySelectorAll('#panel-release td[data-col="release"]')]
    .map((n) => n.textContent);
  return releases.length >= 2 && releases.every((r) => r === "v1");
}"""


class LineReader:
    """Collects a child's output lines on a thread, so the pipe never fills up."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with self._lock:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def text(self) -> str:
        return "\n".join(self.snapshot())

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def wait_for_banner(proc: subprocess.Popen[bytes], out: LineReader, deadline: float) -> list[str]:
    """The lines of the "Vigil is up" banner, once its last line has been printed."""
    while time.monotonic() < deadline:
        lines = out.snapshot()
        if "Stop with Ctrl-C." in lines:
            start = max(i for i, line in enumerate(lines) if line.startswith("Vigil is up"))
            end = lines.index("Stop with Ctrl-C.", start)
            return lines[start : end + 1]
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(
        f"no 'Vigil is up' banner within {LIVE_WITHIN:.0f} s of launch "
        f"(exit code {proc.poll()}):\n{out.text()[-3000:]}"
    )


def banner_urls(banner: list[str]) -> dict[str, str]:
    """``{"dashboards": "http://…/", …}`` from the banner's indented "name  url" lines."""
    rv = {}
    for line in banner[1:-1]:
        name, _, url = line.strip().rpartition(" ")
        rv[name.strip()] = url
    return rv


def shop_paths(front: str) -> list[str]:
    """Pages and API routes a shopper clicking around would hit."""
    status, body = http_get(front + "/api/products?per_page=5")
    assert status == 200, body[:500]
    product_ids = [p["id"] for p in json.loads(body)["items"]][:3]
    status, body = http_get(front + "/api/categories")
    assert status == 200, body[:500]
    categories = json.loads(body)
    slug = categories["categories"][0]["slug"]
    paths = ["/", "/api/products", "/api/products?q=lamp", "/api/categories", "/api/version"]
    paths += [f"/api/products/{pid}" for pid in product_ids]
    paths += [f"/api/products?category={slug}&sort=price", "/api/products?lang=de&currency=PLN"]
    return paths


def shop_around(front: str, answered: list[tuple[str, int]], stop: threading.Event) -> None:
    """SHOPPER_GETS GETs through haproxy, spread evenly over SHOPPER_SECONDS."""
    paths = shop_paths(front)
    pause = SHOPPER_SECONDS / SHOPPER_GETS
    for n in range(SHOPPER_GETS):
        if stop.is_set():
            return
        path = paths[n % len(paths)]
        answered.append((path, http_get(front + path)[0]))
        stop.wait(pause)


def test_vigil_up_prints_urls_and_overview_goes_live(
    browser: Any, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    if haproxy_binary() is None:
        require_server("haproxy", "the haproxy binary is not installed")
    # As `make run` does, with the shipped intervals (5 s): only the data dir
    # and the ports differ, so parallel tests never collide.
    env = up_env(tmp_path / "data")
    for name in ("VIGIL_COLLECT_INTERVAL", "VIGIL_ALERT_INTERVAL"):
        env.pop(name, None)

    launched = time.monotonic()
    deadline = launched + LIVE_WITHIN
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil.cli", "up"],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = LineReader(proc)
    stop_shopping = threading.Event()
    shopper: threading.Thread | None = None
    answered: list[tuple[str, int]] = []
    context: Any = None
    try:
        # 1. The banner lists where everything is.
        banner = wait_for_banner(proc, out, deadline)
        banner_at = time.monotonic() - launched
        urls = banner_urls(banner)
        front = f"http://127.0.0.1:{env['VIGIL_UP_HAPROXY_PORT']}/"
        dashboards = f"http://127.0.0.1:{env['VIGIL_WEB_PORT']}/"
        supervisor = f"http://127.0.0.1:{env['VIGIL_UP_CONTROL_PORT']}/api/instances"
        assert urls.get("shop (via haproxy)") == front, banner
        assert urls.get("dashboards") == dashboards, banner
        assert urls.get("supervisor API") == supervisor, banner
        # The first start made an admin whose password is shown once, here only.
        password = urls.get("admin password", "")
        assert len(password) >= 20, banner
        assert http_get(supervisor)[0] == 401  # the control API wants its token
        status, body = http_get(supervisor, token=control_token(tmp_path / "data"))
        assert status == 200, body[:500]
        status, body = http_get(front + "api/version")
        assert (status, json.loads(body)["release"]) == (200, "v1")

        # 2. A shopper clicks around through haproxy for ~20 s, in the background.
        shopper = threading.Thread(
            target=shop_around, args=(front.rstrip("/"), answered, stop_shopping), daemon=True
        )
        shopper.start()

        # 3. The overview, opened from the banner's URL, goes live on its own
        # (it refreshes itself every few seconds; nobody reloads it).
        context = browser.new_context()
        page = context.new_page()
        errors = watch_console(page)
        browser_login(page, urls["dashboards"], "admin", password)
        remaining_ms = max(1.0, deadline - time.monotonic()) * 1000
        try:
            page.wait_for_function(OVERVIEW_LIVE_JS, timeout=remaining_ms, polling=250)
        except Exception as exc:
            page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
            raise AssertionError(
                f"the overview showed no live data within {LIVE_WITHIN:.0f} s of `vigil up` "
                f"(banner after {banner_at:.1f} s; status line "
                f"{page.locator('#status').text_content()!r}; request-rate note "
                f"{page.locator('#panel-request-rate .empty').text_content()!r}; "
                f"screenshot {tmp_path / 'overview.png'}); shopper GETs so far "
                f"{len(answered)}"
            ) from exc
        live_after = time.monotonic() - launched

        from playwright.sync_api import expect

        rate = page.locator("#panel-request-rate")
        expect(rate.locator("canvas").first).to_be_attached()
        expect(rate.locator(".empty")).to_have_text("")
        expect(rate.locator(".u-legend")).to_contain_text("/api/products")
        # Pointing at the newest point of the chart, as a user would, shows a
        # rate for /api/products in the legend (a "—" would be a gap).
        over = rate.locator(".u-over")
        box = over.bounding_box()
        assert box is not None
        over.hover(position={"x": box["width"] - 1, "y": box["height"] / 2})
        products_row = rate.locator(".u-legend .u-series").filter(
            has=page.locator(".u-label", has_text=re.compile(r"^/api/products$"))
        )
        expect(products_row).to_have_count(1)
        expect(products_row.locator(".u-value")).to_have_text(re.compile(r"^[\d.]+/s$"))
        hovered = products_row.locator(".u-value").text_content()
        # The x axis spans the selected range (15 minutes), not just the data
        # there is: a stack that is a minute old draws its lines at the right edge.
        leftmost = page.evaluate(LEFTMOST_LINE_JS)
        assert leftmost is not None, "no series line drawn on the request-rate chart"
        assert leftmost > 0.5, f"lines start at {leftmost:.0%} of the chart's width"
        page.screenshot(path=str(tmp_path / "overview-live.png"), full_page=True)
        releases = page.locator('#panel-release td[data-col="release"]')
        expect(releases).to_have_count(2)
        expect(releases.first).to_have_text("v1")
        expect(releases.last).to_have_text("v1")
        expect(page.locator("#status")).to_contain_text("updated")
        expect(page.locator("#status")).not_to_have_class("status failed")
        assert errors == []

        # 4. The JSON behind the chart: the page's own expression, and the
        # series it sums, from the stack's SQLite store.
        _, api_token = UserStore(tmp_path / "data" / "users.db").create_token("e2e", "viewer")
        assert http_get(dashboards + "api/overview")[0] == 401
        status, body = http_get(dashboards + "api/overview", token=api_token)
        assert status == 200, body[:500]
        (rate_panel,) = [p for p in json.loads(body)["data"]["panels"] if p["id"] == "request-rate"]
        end = time.time()

        def query_range(expr: str) -> list[dict[str, Any]]:
            qs = urllib.parse.urlencode({"expr": expr, "start": end - 900, "end": end, "step": 5})
            status, body = http_get(f"{dashboards}api/query_range?{qs}", token=api_token)
            assert status == 200, body[:500]
            data = json.loads(body)["data"]
            assert data["resultType"] == "matrix"
            result: list[dict[str, Any]] = data["result"]
            return result

        summed = query_range(rate_panel["expr"])
        assert summed and all(s["values"] for s in summed), summed
        routes = {s["metric"].get("route") for s in summed}
        assert "/api/products" in routes, routes
        per_series = query_range("rate(shop_http_requests_total[1m])")
        shop_ports = {env["VIGIL_UP_SHOP_BASE_PORT"], str(int(env["VIGIL_UP_SHOP_BASE_PORT"]) + 1)}
        assert per_series and all(s["values"] for s in per_series), per_series
        assert {s["metric"].get("job") for s in per_series} == {"shop"}, per_series
        instances = {s["metric"]["instance"] for s in per_series}
        assert {i.rpartition(":")[2] for i in instances} <= shop_ports, instances
        assert (tmp_path / "data" / "siem.db").is_file()
        # The first password is written nowhere in clear: not in a log, not in a database.
        for path in (tmp_path / "data").rglob("*"):
            if path.is_file():
                assert password.encode() not in path.read_bytes(), path

        live = (
            f"overview live after {live_after:.1f} s from `vigil up` start "
            f"(banner after {banner_at:.1f} s; {len(answered)} shopper GETs by then; "
            f"/api/products at {hovered} in the legend)"
        )
        print("\n" + live)
        record_property("measured", live)
    finally:
        stop_shopping.set()
        if shopper is not None:
            shopper.join(timeout=15)
        if context is not None:
            context.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            out.join(timeout=10)
        assert proc.returncode == 0, out.text()[-3000:]
    assert answered and all(code == 200 for _, code in answered), answered
