"""PostgreSQL's server log, found by asking the server, tailed without configuration.

With ``collect.postgresql_log: auto`` (the default) and a PostgreSQL server
to poll (``collect.postgres`` or the shop's database) running on this machine
(a loopback address or a Unix socket: a remote server's files are not ours to
read), the collector asks the server where it logs:

- ``logging_collector = on``: ``pg_current_logfile('jsonlog')`` (read with the
  ``postgresql`` parser) when ``log_destination`` has ``jsonlog``, else
  ``pg_current_logfile('stderr')`` (``postgresql_stderr``); a relative path is
  under ``data_directory``. A role other than a superuser needs ``GRANT EXECUTE
  ON FUNCTION pg_current_logfile(text)`` and ``pg_monitor`` (its
  ``pg_read_all_settings`` shows ``data_directory``).
- ``logging_collector = off``: the server's stderr, which Debian's
  ``pg_ctlcluster`` sends to ``/var/log/postgresql/postgresql-<cluster_name,
  / as ->.log`` (``postgresql-15-main.log``).

The stderr parser gets the server's own ``log_line_prefix`` (``SHOW``), so it
need not be configured. The server is asked again every ``rediscover_s``:
the logging collector starts a new file on rotation, and the previous file is
read to its end. A file a ``collect.files`` or ``collect.tail`` glob already
matches is left to that entry. ``collect.postgresql_log: <path>`` tails that
file (``.json``: jsonlog, else stderr with the server's prefix when the server
answers, ``collect.postgresql_log_line_prefix`` when it does not);
``off`` turns all this off.

What cannot be done (the server refuses, the file is missing or unreadable)
is one WARNING naming the file and the fix, ``vigil_collector_source_up{source="postgresql_log"} 0``
and a count in ``vigil_collector_source_failures_total``; the collector tries
again every ``retry_s`` and never stops for it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from collectors.deferred import SourceHealth
from collectors.metrics import CollectorMetrics
from collectors.parsers import Parser, get_parser
from collectors.postgres import connect, password_from, poll_url, redact
from collectors.sink import Batch
from collectors.tail import Checkpoints, Tailer
from vigil.errors import VigilError
from vigil.settings import Settings

log = logging.getLogger("vigil.collect.postgres")

SOURCE = "postgresql_log"
KEY = "collect.postgresql_log"
DEBIAN_LOG_DIR = Path("/var/log/postgresql")
RETRY_S = 30.0
REDISCOVER_S = 60.0
KEPT_FILES = 2
"""The current log file and the one before it (read to its end after a rotation)."""

_SETTINGS_SQL = """
SELECT current_setting('logging_collector'), current_setting('log_destination'),
       current_setting('log_line_prefix'), current_setting('cluster_name')
"""


class LogNotFound(VigilError):
    """Where the server logs could not be found or read; the message says what to do."""


@dataclass(frozen=True)
class ServerLog:
    """A log file of the server and how to read it."""

    path: Path
    parser: str  # "postgresql" (jsonlog) or "postgresql_stderr"
    prefix: str  # log_line_prefix, for postgresql_stderr


def is_local(url: str) -> bool:
    """True when ``url`` reaches a server on this machine (loopback or a Unix socket).

    >>> is_local("postgresql://postgres@127.0.0.1:5432/shop"), is_local("postgresql:///shop")
    (True, True)
    >>> is_local("postgresql://db.example/shop")
    False
    """
    try:
        params = conninfo_to_dict(url)
    except (psycopg.Error, ValueError):  # UnicodeDecodeError for bytes libpq cannot read
        return False
    hosts = str(params.get("hostaddr") or params.get("host") or "").split(",")
    for host in hosts:
        host = host.strip()
        if not host or host.startswith("/") or host.startswith("@") or host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host.strip("[]")).is_loopback:
                return False
        except ValueError:
            return False  # a name: it may resolve to another machine
    return True


def debian_log(cluster_name: str) -> Path:
    """Where Debian's ``pg_ctlcluster`` sends a cluster's stderr.

    >>> debian_log("15/main")
    PosixPath('/var/log/postgresql/postgresql-15-main.log')
    """
    return DEBIAN_LOG_DIR / f"postgresql-{cluster_name.replace('/', '-')}.log"


def _grant_hint(user: str) -> str:
    return (
        f"as a superuser: GRANT EXECUTE ON FUNCTION pg_current_logfile(text) TO {user};"
        f" GRANT pg_monitor TO {user} (for data_directory); or set {KEY} to the file's path"
    )


def discover(conn: psycopg.Connection[Any]) -> ServerLog:
    """Ask the server behind ``conn`` where it logs; :class:`LogNotFound` says why not."""
    user = conn.info.user
    row = conn.execute(_SETTINGS_SQL).fetchone()
    assert row is not None
    collector_on, destinations, prefix, cluster = (str(v) for v in row)
    dests = {d.strip().lower() for d in destinations.split(",")}
    if collector_on == "on":
        for dest, parser in (("jsonlog", "postgresql"), ("stderr", "postgresql_stderr")):
            if dest not in dests:
                continue
            try:
                found = conn.execute("SELECT pg_current_logfile(%s)", (dest,)).fetchone()
                path = Path(str(found[0])) if found and found[0] else None
                if path is not None and not path.is_absolute():
                    data_dir = conn.execute("SELECT current_setting('data_directory')").fetchone()
                    assert data_dir is not None
                    path = Path(str(data_dir[0])) / path
            except psycopg.errors.InsufficientPrivilege as exc:
                raise LogNotFound(
                    f"PostgreSQL does not tell user {user} where it logs ({str(exc).strip()});"
                    f" {_grant_hint(user)}"
                ) from None
            if path is not None:
                return ServerLog(path, parser, prefix)
        raise LogNotFound(
            f"PostgreSQL logs to log_destination = '{destinations}', of which Vigil reads"
            " jsonlog and stderr; add one of them in postgresql.conf, or set"
            f" {KEY} to the file's path"
        )
    if "stderr" not in dests:
        raise LogNotFound(
            f"PostgreSQL logs to log_destination = '{destinations}' without its logging"
            " collector; set log_destination = 'jsonlog' and logging_collector = on in"
            f" postgresql.conf, or {KEY} to the file's path"
        )
    if not cluster:
        raise LogNotFound(
            "PostgreSQL's logging_collector is off and it has no cluster_name (not a Debian"
            " cluster), so its stderr log cannot be found; set logging_collector = on in"
            f" postgresql.conf, or {KEY} to the file its stderr goes to"
        )
    return ServerLog(debian_log(cluster), "postgresql_stderr", prefix)


def check_readable(path: Path) -> None:
    """:class:`LogNotFound` naming ``path`` and the fix when it cannot be opened for reading."""
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise LogNotFound(
            f"PostgreSQL server log {path} does not exist; check the server's log settings,"
            f" or set {KEY} to the file's path (or off)"
        ) from None
    except ValueError as exc:  # a path the server named with a NUL byte in it
        raise LogNotFound(f"PostgreSQL server log {path!r}: {exc}; set {KEY}") from None
    except OSError as exc:
        raise LogNotFound(
            f"PostgreSQL server log {path}: {exc.strerror}; let the collector's user read it"
            f" (on Debian: add it to group adm), or set {KEY}: off"
        ) from None


class PostgresLogSource:
    """A collector source tailing the server log found by :func:`discover` (or given)."""

    keeps_data = True  # a file: what is not read now is read later

    def __init__(
        self,
        tailer: Tailer,
        metrics: CollectorMetrics,
        *,
        url: str | None,
        path: Path | None = None,
        fallback_prefix: str = "",
        taken: Callable[[Path], bool] = lambda _path: False,
        timeout_s: float = 3.0,
        password: str | None = None,
        retry_s: float = RETRY_S,
        rediscover_s: float = REDISCOVER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.health = SourceHealth(SOURCE, metrics)
        self.tailer = tailer
        self._url = url
        self._path = path
        self._fallback_prefix = fallback_prefix
        self._taken = taken
        self._timeout_s = timeout_s
        self._password = password
        self._retry_s = retry_s
        self._rediscover_s = rediscover_s
        self._clock = clock
        self._next = 0.0
        self.files: dict[Path, Parser] = {}
        self.left_to: Path | None = None  # the log, when a collect.files glob has it

    def _find(self) -> ServerLog:
        """The log to tail: asked of the server, or the path given with the server's prefix."""
        if self._url is None:
            assert self._path is not None
            return ServerLog(self._path, _parser_for(self._path), self._fallback_prefix)
        try:
            with connect(self._url, timeout_s=self._timeout_s, password=self._password) as conn:
                if self._path is None:
                    return discover(conn)
                row = conn.execute("SHOW log_line_prefix").fetchone()
                prefix = str(row[0]) if row else self._fallback_prefix
                return ServerLog(self._path, _parser_for(self._path), prefix)
        except psycopg.Error as exc:
            if self._path is not None:  # the file is known; only the prefix is not
                return ServerLog(self._path, _parser_for(self._path), self._fallback_prefix)
            raise LogNotFound(
                f"cannot ask PostgreSQL at {redact(self._url)} where it logs: {str(exc).strip()}"
            ) from None

    def discover(self) -> None:
        """Find the log now; tail it (and the one before) from now on."""
        try:
            found = self._find()
            if self._taken(found.path):  # an explicit collect.files entry wins
                if found.path != self.left_to:
                    log.info(
                        "PostgreSQL server log already tailed through collect.files/tail",
                        extra={"file.path": str(found.path)},
                    )
                self.left_to = found.path
                self.files = {}
                self.tailer.set_parsers({})
                self.health.working()
                self._next = self._clock() + self._rediscover_s
                return
            check_readable(found.path)
            parser = get_parser(found.parser, key=KEY, postgresql_prefix=found.prefix)
        except VigilError as exc:  # LogNotFound, or a prefix the parser cannot read
            self.health.failed(str(exc))
            self._next = self._clock() + self._retry_s
            return
        # Anything else the server answers is outside input too: counted, never the
        # collector's end (as for the poller).
        except Exception as exc:
            self.health.failed(f"PostgreSQL server log: cannot find it: {exc!r}")
            self._next = self._clock() + self._retry_s
            return
        if found.path not in self.files:
            log.info(
                "tailing PostgreSQL server log",
                extra={"file.path": str(found.path), "labels.parser": found.parser},
            )
        self.left_to = None
        self.files.pop(found.path, None)
        self.files[found.path] = parser
        while len(self.files) > KEPT_FILES:
            del self.files[next(iter(self.files))]
        self.tailer.set_parsers({str(p): fn for p, fn in self.files.items()})
        self.health.working()
        self._next = self._clock() + self._rediscover_s

    def collect(self) -> list[Batch]:
        if self._clock() >= self._next:
            self.discover()
        return self.tailer.collect()

    def behind(self) -> bool:
        return self.tailer.behind()


def _parser_for(path: Path) -> str:
    return "postgresql" if path.suffix == ".json" else "postgresql_stderr"


def _matcher(data_dir: Path, patterns: Sequence[str]) -> Callable[[Path], bool]:
    full = [str(p if Path(p).is_absolute() else data_dir / p) for p in patterns]

    def taken(path: Path) -> bool:
        with contextlib.suppress(OSError):
            path = path.resolve()
        return any(fnmatch.fnmatchcase(str(path), pattern) for pattern in full)

    return taken


def pglog_from(
    settings: Settings,
    checkpoints: Checkpoints,
    metrics: CollectorMetrics,
    *,
    clock: Callable[[], float] = time.time,
) -> PostgresLogSource | None:
    """The server-log source ``collect.postgresql_log`` asks for, or None (see the module doc)."""
    mode = settings.collect.postgresql_log.strip()
    if mode.lower() == "off":
        return None
    url = poll_url(settings)
    data_dir = Path(settings.data_dir).resolve()
    # A relative path is under the data dir, as in collect.files.
    path = None if mode.lower() == "auto" else data_dir / mode
    if path is None:
        if url is None:
            return None
        if not is_local(url):
            log.info(
                "PostgreSQL runs on another machine: its server log is not read here"
                f" (set {KEY} to a local copy of it)",
                extra={"url.full": redact(url)},
            )
            return None
    return PostgresLogSource(
        Tailer(data_dir, [], checkpoints, metrics, clock=clock),
        metrics,
        url=url,
        path=path,
        fallback_prefix=settings.collect.postgresql_log_line_prefix,
        taken=_matcher(data_dir, [*settings.collect.files, *settings.collect.tail]),
        timeout_s=settings.collect.postgres_timeout_s,
        password=password_from(),
    )
