"""Shop HTTP benchmark: throughput and latency of the main routes under gunicorn.

Starts the real shop (``vigil shop serve``, 2 workers) on SQLite and, when the
server answers, on PostgreSQL, drives each scenario from a pool of concurrent
clients over loopback, and prints requests/s, p50 and p95 with the ratio to
``/healthz`` measured in the same run (the baseline: the same server, no
database work). Bounded: a fixed number of requests per scenario.

    .venv/bin/python bench/shop_http.py [--requests 300] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARD = {"number": "4242424242424242", "expiry": "12/39", "cvc": "123", "holder": "Bench"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def call(url: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {}


def start_shop(db_url: str, data_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(
        os.environ,
        VIGIL_DATA_DIR=data_dir,
        VIGIL_SHOP_DB=db_url,
        VIGIL_SHOP_PORT=str(port),
        VIGIL_SHOP_WORKERS="2",
        VIGIL_CONFIG=str(REPO / "config" / "vigil.yaml"),
        VIGIL_SMTP_PORT=str(free_port()),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil.cli", "shop", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if call(base + "/readyz")[0] == 200:
                return proc, base
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("shop did not start")


def measure(fn: Callable[[int], int], requests: int, clients: int) -> dict[str, float]:
    def timed(i: int) -> tuple[float, int]:
        started = time.perf_counter()
        status = fn(i)
        return time.perf_counter() - started, status

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(timed, range(requests)))
    wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    errors = sum(1 for r in results if r[1] >= 500)
    return {
        "rps": requests / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000,
        "errors": errors,
    }


def scenarios(base: str) -> dict[str, Callable[[int], int]]:
    product_ids = [
        p["id"]
        for p in call(base + "/api/products?per_page=50")[1]["items"]  # type: ignore[index]
        if p["stock"] > 50
    ]  # type: ignore[index]

    def checkout(i: int) -> int:
        cart = call(base + "/api/carts", {})[1]["cart_id"]
        call(
            f"{base}/api/carts/{cart}/items",
            {"product_id": product_ids[i % len(product_ids)], "quantity": 1},
        )
        # A distinct card and e-mail per order so the fraud velocity check stays out of it.
        card = dict(CARD, expiry=f"{1 + i % 12:02d}/{40 + i // 12 % 50}")
        return call(
            base + "/api/checkout",
            {
                "cart_id": cart,
                "email": f"b{i}@example.com",
                "currency": "EUR",
                "gateway": "stripe",
                "card": card,
            },
        )[0]

    return {
        "GET /healthz (baseline)": lambda i: call(base + "/healthz")[0],
        "GET /api/products?q=lamp": lambda i: call(base + "/api/products?q=lamp")[0],
        "GET /api/products/<id>": lambda i: call(
            f"{base}/api/products/{product_ids[i % len(product_ids)]}"
        )[0],
        "GET / (HTML catalogue)": lambda i: call(base + "/")[0],
        "checkout flow (4 calls)": checkout,
    }


def pg_url() -> str | None:
    try:
        import psycopg

        name = f"vigil_bench_{os.getpid()}"
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    except Exception:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    backends = [("sqlite", None)]
    url = pg_url()
    if url:
        backends.append(("postgresql", url))
    print(
        f"shop HTTP benchmark: {args.requests} requests per scenario, {args.clients} clients, "
        "gunicorn 2 workers x 8 threads, loopback"
    )
    for backend, db in backends:
        with tempfile.TemporaryDirectory() as tmp:
            proc, base = start_shop(db or f"sqlite:///{tmp}/shop.db", tmp)
            try:
                print(f"\n{backend}")
                print(
                    f"  {'scenario':<28}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
                    f"{'5xx':>6}{'vs baseline':>13}"
                )
                baseline = None
                for name, fn in scenarios(base).items():
                    r = measure(fn, args.requests, args.clients)
                    baseline = baseline or r["rps"]
                    print(
                        f"  {name:<28}{r['rps']:>9.0f}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}"
                        f"{r['errors']:>6.0f}{r['rps'] / baseline:>12.2f}x"
                    )
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    if url:
        drop_pg(url)


def drop_pg(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
