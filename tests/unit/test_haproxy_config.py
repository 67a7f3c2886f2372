"""The generated haproxy configuration, checked by haproxy itself when installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import require_server

from vigil.haproxy import HaproxyAdmin, HaproxyError, Server, haproxy_binary, render_config


def test_haproxy_config_balances_every_instance_with_health_checks(tmp_path: Path) -> None:
    text = render_config(
        port=8100,
        servers=[Server("shop-1", 8001), Server("shop-2", 8002)],
        admin_socket=tmp_path / "haproxy.sock",
    )
    assert "bind 127.0.0.1:8100" in text
    assert "server shop-1 127.0.0.1:8001 check" in text
    assert "server shop-2 127.0.0.1:8002 check" in text
    assert "option httpchk GET /readyz" in text
    assert "option forwardfor" in text
    assert f"stats socket {tmp_path / 'haproxy.sock'} mode 600 level admin" in text


def test_haproxy_accepts_the_generated_config(tmp_path: Path) -> None:
    binary = haproxy_binary()
    if binary is None:
        require_server("haproxy", "the haproxy binary is not installed")
        return
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        render_config(port=8100, servers=[Server("shop-1", 8001)], admin_socket=tmp_path / "s")
    )
    check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_haproxy_admin_unreachable_socket_is_a_clear_error(tmp_path: Path) -> None:
    admin = HaproxyAdmin(tmp_path / "missing.sock")
    assert not admin.available()
    with pytest.raises(HaproxyError, match=r"missing\.sock"):
        admin.set_state("shop-1", "drain")


def test_haproxy_admin_rejects_unknown_state(tmp_path: Path) -> None:
    with pytest.raises(HaproxyError, match="ready, drain or maint"):
        HaproxyAdmin(tmp_path / "x.sock").set_state("shop-1", "sleepy")
