"""ECS JSON logs of the shop, one file per dataset under the log dir.

Per ECS, each line is one event with ``@timestamp``, ``log.level``, ``message``
and ``ecs.version`` first; ``event.dataset`` says which stream it belongs to,
so collectors can route ``shop.access``, ``shop.app``, ``shop.audit``,
``shop.auth`` and ``shop.payment`` without guessing from file names.

Every message and field passes ``shop.scrub`` on its way out, so no card
number a client sent (in a URL, a query string, a body echoed in a message)
reaches a log file whole; each masked one is counted in
``shop_log_pans_masked_total``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ecs_logging

from shop import metrics
from shop.scrub import scrub_pan, scrub_value

DATASETS = ("access", "app", "audit", "auth", "payment")


class ShopLogs:
    """The five shop loggers, writing ECS JSON to ``<log_dir>/<dataset>.log``.

    Example::

        logs = ShopLogs(Path("data/logs"), service="shop", instance="shop-1")
        logs.auth("login failed", **{"event.outcome": "failure", "user.name": "bob"})
    """

    def __init__(self, log_dir: Path, *, service: str = "shop", instance: str = "") -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self.service = service
        self.instance = instance
        self._loggers: dict[str, logging.Logger] = {}
        for dataset in DATASETS:
            # A logger per directory: tests build several apps in one process.
            logger = logging.getLogger(f"vigil.shop.{dataset}.{log_dir.resolve()}")
            logger.setLevel(logging.INFO)
            logger.propagate = False
            if not logger.handlers:
                handler = logging.FileHandler(log_dir / f"{dataset}.log", encoding="utf-8")
                handler.setFormatter(
                    ecs_logging.StdlibFormatter(exclude_fields=["log.original", "log.origin"])
                )
                logger.addHandler(handler)
            self._loggers[dataset] = logger

    def _emit(self, dataset: str, message: str, level: int, fields: dict[str, Any]) -> None:
        extra: dict[str, Any] = {
            "event.dataset": f"shop.{dataset}",
            "service.name": self.service,
        }
        if self.instance:
            extra["service.node.name"] = self.instance
        message, masked = scrub_pan(message)
        for key, value in fields.items():
            if value is None:
                continue
            extra[key], n = scrub_value(value)
            masked += n
        if masked:
            metrics.LOG_PANS_MASKED.labels(dataset).inc(masked)
        self._loggers[dataset].log(level, message, extra=extra)

    def access(self, message: str, **fields: Any) -> None:
        self._emit("access", message, logging.INFO, fields)

    def app(self, message: str, level: int = logging.INFO, **fields: Any) -> None:
        self._emit("app", message, level, fields)

    def audit(self, message: str, **fields: Any) -> None:
        self._emit("audit", message, logging.INFO, fields)

    def auth(self, message: str, level: int = logging.INFO, **fields: Any) -> None:
        self._emit("auth", message, level, fields)

    def payment(self, message: str, level: int = logging.INFO, **fields: Any) -> None:
        self._emit("payment", message, level, fields)

    def close(self) -> None:
        for logger in self._loggers.values():
            for handler in list(logger.handlers):
                handler.close()
                logger.removeHandler(handler)
