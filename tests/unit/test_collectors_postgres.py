"""The PostgreSQL poller's names, URLs and settings, without a server."""

from __future__ import annotations

import pytest

from collectors.postgres import (
    EXPORTER_METRICS,
    VIGIL_METRICS,
    instance_of,
    poll_url,
    redact,
    sqlalchemy_to_libpq,
)
from vigil.errors import ConfigError
from vigil.settings import from_mapping

# Copied from the Desc definitions of prometheus-community/postgres_exporter at
# dbb1987e2f0d (collector/*.go, exporter/postgres_exporter.go), as name → labels.
EXPORTER_SOURCE = {
    # collector/pg_stat_database.go
    **{
        f"pg_stat_database_{c}": ("datid", "datname")
        for c in [
            "numbackends",
            "xact_commit",
            "xact_rollback",
            "blks_read",
            "blks_hit",
            "tup_returned",
            "tup_fetched",
            "tup_inserted",
            "tup_updated",
            "tup_deleted",
            "conflicts",
            "temp_files",
            "temp_bytes",
            "deadlocks",
        ]
    },
    # collector/pg_stat_activity.go (the full label list; the poller keeps a subset)
    "pg_stat_activity_count": (
        [
            "datname",
            "state",
            "usename",
            "application_name",
            "backend_type",
            "wait_event_type",
            "wait_event",
        ]
    ),
    "pg_stat_activity_max_tx_duration": (
        [
            "datname",
            "state",
            "usename",
            "application_name",
            "backend_type",
            "wait_event_type",
            "wait_event",
        ]
    ),
    # collector/pg_long_running_transactions.go
    "pg_long_running_transactions": (),
    "pg_long_running_transactions_oldest_timestamp_seconds": (),
    # collector/pg_locks.go
    "pg_locks_count": ("datname", "mode"),
    # collector/pg_database.go
    "pg_database_size_bytes": ("datname",),
    # collector/pg_stat_user_tables.go
    **{
        f"pg_stat_user_tables_{c}": ("datname", "schemaname", "relname")
        for c in [
            "seq_scan",
            "idx_scan",
            "n_tup_ins",
            "n_tup_upd",
            "n_tup_del",
            "n_live_tup",
            "n_dead_tup",
            "table_size_bytes",
            "index_size_bytes",
        ]
    },
    # collector/pg_replication.go
    "pg_replication_lag_seconds": (),
    "pg_replication_is_replica": (),
    # exporter/postgres_exporter.go: Namespace "pg", Name "up"
    "pg_up": (),
}


def test_postgres_exporter_names_match_the_exporter_source() -> None:
    assert set(EXPORTER_METRICS) == set(EXPORTER_SOURCE)
    for name, labels in EXPORTER_METRICS.items():
        if name.startswith("pg_stat_activity_"):
            # A subset: usename, application_name, ... would grow with every client.
            assert labels == ("datname", "state")
            assert set(labels) <= set(EXPORTER_SOURCE[name])
        else:
            assert tuple(labels) == tuple(EXPORTER_SOURCE[name]), name


def test_postgres_vigil_metrics_do_not_shadow_exporter_names() -> None:
    assert not set(VIGIL_METRICS) & set(EXPORTER_SOURCE)
    assert all(name.startswith("pg_") for name in VIGIL_METRICS)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://postgres@127.0.0.1:5432/shop",
            "postgresql://postgres@127.0.0.1:5432/shop",
        ),
        ("postgresql://u@db/shop", "postgresql://u@db/shop"),
        ("postgres+psycopg2://u@db/shop", "postgresql://u@db/shop"),
        ("sqlite:////tmp/shop.db", None),
        ("mysql+pymysql://u@db/shop", None),
        ("not a url", None),
    ],
)
def test_postgres_sqlalchemy_to_libpq_strips_the_driver(url: str, expected: str | None) -> None:
    assert sqlalchemy_to_libpq(url) == expected


def test_postgres_poll_url_follows_the_shop_database_unless_configured() -> None:
    pg_shop = {"shop": {"db": "postgresql+psycopg://postgres@127.0.0.1:5432/shop"}}
    assert poll_url(from_mapping(pg_shop)) == "postgresql://postgres@127.0.0.1:5432/shop"
    assert poll_url(from_mapping({})) is None  # SQLite shop: nothing to poll
    other = {**pg_shop, "collect": {"postgres": "postgresql://mon@db2:6432/app"}}
    assert poll_url(from_mapping(other)) == "postgresql://mon@db2:6432/app"
    assert poll_url(from_mapping({**pg_shop, "collect": {"postgres": "off"}})) is None
    env = {"VIGIL_COLLECT_POSTGRES": "postgresql://x@h/d"}
    assert poll_url(from_mapping({}, env)) == "postgresql://x@h/d"


def test_postgres_settings_reject_a_password_in_the_url() -> None:
    with pytest.raises(ConfigError, match="VIGIL_POSTGRES_PASSWORD"):
        from_mapping({"collect": {"postgres": "postgresql://u:secret@h/d"}})


@pytest.mark.parametrize(("key", "value"), [("postgres_timeout_s", 0), ("postgres_max_tables", -1)])
def test_postgres_settings_reject_bad_limits(key: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"collect.{key}"):
        from_mapping({"collect": {key: value}})


def test_postgres_instance_label_is_host_and_port() -> None:
    assert instance_of("postgresql://u@db.example/shop") == "db.example:5432"
    assert instance_of("postgresql://u@[::1]:6432/shop") == "[::1]:6432"
    assert instance_of("postgresql://u@h:notaport/shop") == "unknown"


def test_postgres_redact_hides_the_password() -> None:
    assert redact("postgresql://u:s3cret@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"
