"""Settings: defaults, file, environment, and errors that name file, line and key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from vigil.cli import main, reference_markdown
from vigil.errors import ConfigError
from vigil.settings import from_mapping, load_settings

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vigil.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_settings_defaults_without_file(tmp_path: Path) -> None:
    settings = load_settings(None, env={"VIGIL_CONFIG": str(write(tmp_path, ""))})
    assert settings.shop.port == 8001
    assert settings.shop.release == "v1"
    assert settings.shop.rates["PLN"] == Decimal("4.30")
    assert settings.shop_db_url.startswith("sqlite:///")
    assert sorted(settings.shop.gateways) == ["adyen", "payu", "stripe"]


def test_settings_shipped_config_loads() -> None:
    settings = load_settings(REPO / "config" / "vigil.yaml", env={})
    assert settings.shop.gateways["payu"].latency_ms == 80
    assert settings.shop.fraud.max_amount_eur == Decimal("5000")


def test_settings_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "shop:\n  port: 9000\n  release: v1\n")
    settings = load_settings(
        path,
        env={
            "VIGIL_SHOP_PORT": "9100",
            "VIGIL_SHOP_RELEASE": "v2",
            "VIGIL_SHOP_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2",
            "VIGIL_SHOP_FAULTS_ENABLED": "yes",
        },
    )
    assert settings.shop.port == 9100
    assert settings.shop.release == "v2"
    assert settings.shop.trusted_proxies == ["10.0.0.1", "10.0.0.2"]
    assert settings.shop.faults_enabled is True


def test_settings_nested_section_reads_env_when_absent_from_file(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, "data_dir: x\n"), env={"VIGIL_SHOP_MAIL_DAILY_CAP": "7"}
    )
    assert settings.shop.mail.daily_cap == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shop:\n  port: eighty\n", r"vigil.yaml:2: shop.port: expected an integer, got 'eighty'"),
        ("shop:\n  prot: 8000\n", r"vigil.yaml:2: shop.prot: unknown key; known keys here are"),
        (
            "shop:\n  gateways:\n    stripe:\n      latency: 3\n",
            r"vigil.yaml:4: shop.gateways.stripe.latency: unknown key",
        ),
        ("shop:\n  faults_enabled: maybe\n", r"vigil.yaml:2: shop.faults_enabled: expected true"),
        (
            "shop:\n  rates:\n    EUR: 1\n    USD: lots\n",
            r"vigil.yaml:4: shop.rates.USD: expected a decimal number",
        ),
        ("shop: [\n", r"vigil.yaml:2:\d+: not valid YAML"),
        ("- a\n- b\n", r"vigil.yaml:1: the top level must be a mapping"),
        (
            "shop:\n  gateways:\n    stripe: {decline_rate: 2}\n",
            r"shop.gateways.stripe.decline_rate: must be between 0 and 1",
        ),
        ("shop:\n  port: 70000\n", r"shop.port: must be between 1 and 65535"),
        ("shop:\n  db_busy_timeout_s: -1\n", r"shop.db_busy_timeout_s: must be between 0 and"),
    ],
)
def test_settings_bad_file_names_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text), env={})


def test_settings_bad_env_names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$VIGIL_SHOP_WORKERS\): expected an integer"):
        load_settings(write(tmp_path, ""), env={"VIGIL_SHOP_WORKERS": "two"})


def test_settings_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml", env={})


def test_settings_from_mapping_types() -> None:
    settings = from_mapping({"shop": {"vip_discount_percent": "7.5", "workers": 3}})
    assert settings.shop.vip_discount_percent == Decimal("7.5")
    assert settings.shop.workers == 3


def test_config_check_cli_reports_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "shop:\n  release: v9\n")
    assert main(["config", "check", str(path)]) == 2
    assert "unknown release 'v9'" in capsys.readouterr().err


def test_config_reference_doc_is_current() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert reference_markdown() in doc, "run: vigil config reference, and update the table"


def test_config_check_cli_locates_collector_errors_at_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "shop:\n  port: 8001\ncollect:\n  files:\n    run/app.log: ecs\n"
        "    /var/log/pg.d/main.log: postgres\n",
    )
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:6: collect.files./var/log/pg.d/main.log: unknown parser 'postgres'" in err
    path = write(tmp_path, "collect:\n  interval_s: 5\n  postgresql_log_line_prefix: '%Z '\n")
    with pytest.raises(ConfigError, match=r"collect\.postgresql_log_line_prefix: .*%Z") as info:
        load_settings(path, env={})
    assert (info.value.file, info.value.line) == (str(path), 3)
    # Set by its environment variable, the value is not the file's line.
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"VIGIL_COLLECT_POSTGRESQL_LOG_LINE_PREFIX": "%Y "})
    assert info.value.line is None


def test_settings_check_errors_name_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "collect:\n  interval_s: 5\n  payments_grace_s: -1\n")
    with pytest.raises(
        ConfigError, match=r"collect\.payments_grace_s: must not be negative"
    ) as info:
        load_settings(path, env={})
    assert (info.value.file, info.value.line) == (str(path), 3)


def test_settings_module_depends_on_no_subsystem() -> None:
    import subprocess
    import sys

    code = (
        "import sys, vigil.settings\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('collectors', 'siem', 'shop', 'alerting', 'dashboards'))\n"
        "assert not bad, bad\n"
        "vigil.settings.load_settings(None, env={})\n"
        "assert 'collectors' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
