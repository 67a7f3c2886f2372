"""ECS JSON logging for Vigil's own processes (stderr).

Per ECS, every line carries ``@timestamp``, ``log.level``, ``message`` and
``ecs.version``; ``service.name`` says which Vigil process wrote it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import ecs_logging

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


def setup_logging(level: int = logging.INFO) -> None:
    """Send the root logger to stderr as ECS JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ecs_logging.StdlibFormatter(exclude_fields=["log.original"]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
