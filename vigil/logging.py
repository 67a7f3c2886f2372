"""Logging for Vigil's own processes: short human lines on a terminal, ECS JSON for machines.

The console (stderr) gets ``22:14:03 INFO  collect  collector started`` when it
is a terminal, and ECS JSON otherwise (pipes, systemd, tests) or when asked
(``--log-format json``, ``VIGIL_LOG_FORMAT=json``). Every process also writes
ECS JSON to ``<data_dir>/logs/vigil/<process>.json``. That file is *not*
collected: the collector's default ``collect.tail`` glob is ``logs/*.log``, and
tailing the collector's own log would feed every batch back into the next one.

Per ECS, every JSON line carries ``@timestamp``, ``log.level``, ``message`` and
``ecs.version``; ``service.name`` says which Vigil process wrote it.

Access lines of Vigil's own endpoints (werkzeug's per-request INFO lines: the
supervisor API polled by the overview, ``/metrics`` scrapes) go to the file
only, never to the console.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

import ecs_logging

LogFormat = Literal["human", "json"]
FORMATS: tuple[LogFormat, ...] = ("human", "json")
ENV_VAR = "VIGIL_LOG_FORMAT"
FILE_MAX_BYTES = 10 * 1024 * 1024
FILE_BACKUPS = 3
# Loggers whose INFO lines are per-request access logs of Vigil's own servers.
ACCESS_LOGGERS = ("werkzeug", "gunicorn.access")
# Five letters at most, so the process column lines up.
SHORT_LEVELS = {"WARNING": "WARN", "CRITICAL": "CRIT"}
# ECS fields worth a glance on the console, shown after the message as ``key=value``.
DETAIL_FIELDS = {"url.full": "url", "file.path": "file", "error.message": "error"}

ECS_LOGCONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "ecs": {"()": "ecs_logging.StdlibFormatter", "exclude_fields": ["log.original"]},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "ecs",
            "stream": "ext://sys.stderr",
        },
    },
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def choose_format(
    flag: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> LogFormat:
    """``--log-format`` wins, then ``VIGIL_LOG_FORMAT``, then human on a terminal, else json.

    Example: ``choose_format(None, env={}, stream=sys.stderr)`` is ``"human"`` in a
    terminal and ``"json"`` under systemd.
    """
    env = os.environ if env is None else env
    for value in (flag, env.get(ENV_VAR, "")):
        if value:
            value = value.strip().lower()
            if value in FORMATS:
                return "human" if value == "human" else "json"
    stream = sys.stderr if stream is None else stream
    try:
        return "human" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or unusual stream is no terminal
        return "json"


def human_line(
    time_s: float,
    level: str,
    process: str,
    message: str,
    details: Mapping[str, Any] | None = None,
) -> str:
    """``22:14:03 INFO  collect  collector started``: local time, padded level and process,
    then ``details`` (ECS fields such as ``url.full``, ``labels.job``) as ``key=value``."""
    clock = dt.datetime.fromtimestamp(time_s).strftime("%H:%M:%S")
    name = SHORT_LEVELS.get(level.upper(), level.upper())
    rv = f"{clock} {name:<5} {process:<8} {message}"
    shown = []
    for key, value in (details or {}).items():
        if value in (None, ""):
            continue
        label = DETAIL_FIELDS.get(key) or key.removeprefix("labels.")
        if key in DETAIL_FIELDS or key.startswith("labels."):
            shown.append(f"{label}={value}")
    return rv + ("  " + " ".join(shown) if shown else "")


class HumanFormatter(logging.Formatter):
    """One short line per record (plus the traceback, when there is one)."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        details = {k: v for k, v in vars(record).items() if "." in k}
        rv = human_line(
            record.created, record.levelname, self.process, record.getMessage(), details
        )
        if record.exc_info:
            rv += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            rv += "\n" + record.exc_text
        return rv


def human_from_ecs(line: str, process: str) -> str | None:
    """An ECS JSON log line as a human line; None for access lines. Other text is kept as is.

    The supervisor shows its children's output this way under ``vigil up``.
    """
    text = line.rstrip("\r\n")
    try:
        doc = json.loads(text)
    except ValueError:
        return f"{process:<8} | {text}" if text else None
    if not isinstance(doc, dict) or "message" not in doc:
        return f"{process:<8} | {text}"
    level = str(_field(doc, "log.level") or "info")
    logger = str(_field(doc, "log.logger") or "")
    if logger in ACCESS_LOGGERS and level.lower() in ("debug", "info"):
        return None
    try:
        stamp = dt.datetime.fromisoformat(str(doc.get("@timestamp", "")).replace("Z", "+00:00"))
        time_s = stamp.timestamp()
    except ValueError:
        time_s = dt.datetime.now().timestamp()
    trace = _field(doc, "error.stack_trace")
    details = {k: _field(doc, k) for k in DETAIL_FIELDS if not (trace and k.startswith("error."))}
    labels = _field(doc, "labels")
    if isinstance(labels, Mapping):
        details.update({f"labels.{k}": v for k, v in labels.items()})
    details.update({k: v for k, v in doc.items() if k.startswith("labels.")})
    rv = human_line(time_s, level, process, str(doc["message"]), details)
    return f"{rv}\n{trace}" if trace else rv


def _field(doc: Mapping[str, Any], dotted: str) -> Any:
    """``log.level`` as a flat key or nested objects (ECS allows both)."""
    if dotted in doc:
        return doc[dotted]
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


class _NoAccessLines(logging.Filter):
    """Keeps per-request access lines off the console (they stay in the file): werkzeug's
    and gunicorn's, and the web app's own (INFO records that carry a response status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        if record.name in ACCESS_LOGGERS:
            return False
        return getattr(record, "http.response.status_code", None) is None


def log_file(data_dir: str | Path, process: str) -> Path:
    """Where ``process`` writes its ECS JSON log: ``<data_dir>/logs/vigil/<process>.json``."""
    return Path(data_dir) / "logs" / "vigil" / f"{process}.json"


def setup_logging(
    process: str = "vigil",
    *,
    data_dir: str | Path | None = None,
    log_format: str | None = None,
    level: int = logging.INFO,
    console_level: int = logging.NOTSET,
) -> LogFormat:
    """Console handler (human or ECS JSON, see ``choose_format``) plus, with ``data_dir``,
    the ECS JSON file ``log_file(data_dir, process)``. Returns the console's format.

    ``console_level`` raises the bar for the console alone (the file gets ``level``)."""
    fmt = choose_format(log_format)
    ecs = ecs_logging.StdlibFormatter(
        exclude_fields=["log.original"], extra={"service.name": f"vigil-{process}"}
    )
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(HumanFormatter(process) if fmt == "human" else ecs)
    console.addFilter(_NoAccessLines())
    console.setLevel(console_level)
    handlers: list[logging.Handler] = [console]
    problem = ""
    if data_dir is not None:
        path = log_file(data_dir, process)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            to_file = logging.handlers.RotatingFileHandler(
                path, maxBytes=FILE_MAX_BYTES, backupCount=FILE_BACKUPS, encoding="utf-8"
            )
        except OSError as exc:  # a read-only data dir must not stop the process
            problem = f"not writing the log file {path}: {exc}"
        else:
            to_file.setFormatter(ecs)
            handlers.append(to_file)
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    # The Elasticsearch client logs every request (and every node it retries) at INFO.
    logging.getLogger("elastic_transport").setLevel(max(level, logging.WARNING))
    if problem:
        logging.getLogger("vigil.logging").warning(problem)
    return fmt
