"""Whatever a server answers about its logging, discovery gives a log to read or a
LogNotFound saying why (never another exception in the collector's loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from collectors.parsers import get_parser
from collectors.pglog import LogNotFound, ServerLog, check_readable, discover, is_local
from vigil.errors import VigilError

TEXT = st.text(max_size=40) | st.sampled_from(["on", "off", "stderr", "jsonlog", "15/main", ""])
DESTINATIONS = st.lists(
    st.sampled_from(["stderr", "jsonlog", "csvlog", "syslog", " STDERR", ""]), max_size=3
).map(",".join)


class FakeServer:
    """A connection answering discovery's queries with drawn values (or a refusal)."""

    def __init__(self, settings: tuple[str, ...], logfile: Any, denied: bool, data_dir: str):
        self.info = type("Info", (), {"user": "vigil"})()
        self._settings = settings
        self._logfile = logfile
        self._denied = denied
        self._data_dir = data_dir
        self._row: Any = None

    def execute(self, sql: str, params: Any = None) -> FakeServer:
        if "pg_current_logfile" in sql:
            if self._denied:
                raise psycopg.errors.InsufficientPrivilege("permission denied")
            self._row = (self._logfile,)
        elif "data_directory" in sql:
            self._row = (self._data_dir,)
        else:
            self._row = self._settings
        return self

    def fetchone(self) -> Any:
        return self._row


@FUZZ
@given(
    collector=TEXT,
    destinations=DESTINATIONS | st.text(max_size=20),
    prefix=st.text(max_size=30),
    cluster=TEXT,
    logfile=st.none() | st.text(max_size=40),
    denied=st.booleans(),
    data_dir=st.text(max_size=20),
)
def test_fuzz_discovery_gives_a_log_or_log_not_found(
    collector: str,
    destinations: str,
    prefix: str,
    cluster: str,
    logfile: str | None,
    denied: bool,
    data_dir: str,
) -> None:
    server = FakeServer((collector, destinations, prefix, cluster), logfile, denied, data_dir)
    try:
        found = discover(server)  # type: ignore[arg-type]
    except LogNotFound as exc:
        assert str(exc)
        return
    assert isinstance(found, ServerLog)
    assert found.parser in ("postgresql", "postgresql_stderr")
    assert found.prefix == prefix
    try:  # what the source does next: both fail only with a located VigilError
        check_readable(found.path)
        get_parser(found.parser, key="collect.postgresql_log", postgresql_prefix=found.prefix)
    except VigilError:
        pass


@FUZZ
@given(url=st.text(max_size=60) | st.from_regex(r"postgresql://[a-z0-9.:\[\],/@%]{0,40}"))
def test_fuzz_is_local_never_raises(url: str) -> None:
    assert isinstance(is_local(url), bool)


@FUZZ
@given(name=st.text(max_size=30))
def test_fuzz_check_readable_of_no_file_is_log_not_found(name: str) -> None:
    path = Path("/nonexistent-vigil") / name.replace("/", "_")
    with pytest.raises(LogNotFound, match="PostgreSQL server log"):
        check_readable(path)
