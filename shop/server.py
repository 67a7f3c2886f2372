"""Serve the shop with gunicorn: several workers, one /metrics for all of them.

``serve(settings)`` is what ``vigil shop serve`` runs. It prepares the
prometheus-client multiprocess directory *before* any metric is created (the
library picks its value storage at import time), creates and seeds the schema
once in the master, then lets gunicorn fork the workers. Each worker runs the
order-confirmation mail queue in a background thread.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from prometheus_client import values

from vigil.logging import ECS_LOGCONFIG
from vigil.settings import Settings


def multiproc_dir(settings: Settings) -> Path:
    return Path(settings.data_dir).resolve() / "prometheus" / f"shop-{settings.shop.port}"


def prepare_metrics_dir(settings: Settings) -> Path:
    """An empty multiprocess directory for this instance, exported in the environment."""
    if "shop.metrics" in sys.modules:
        raise RuntimeError("prepare_metrics_dir must run before shop.metrics is imported")
    path = multiproc_dir(settings)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    # prometheus-client picks its value storage when first imported, which another
    # command module may already have done; choose again now that the directory is set.
    values.ValueClass = values.get_value_class()
    return path


def init_database(settings: Settings) -> None:
    """Create the schema and seed an empty database (idempotent)."""
    from shop.db import create_schema, make_engine, make_sessionmaker
    from shop.seed import seed

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.shop_db_url)
    try:
        create_schema(engine)
        with make_sessionmaker(engine).begin() as session:
            seed(session)
    finally:
        engine.dispose()


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _post_worker_init(worker: Any) -> None:
    from shop.context import EXTENSION
    from shop.mailer import MailWorker

    MailWorker(worker.wsgi.extensions[EXTENSION]).start()


OPTIONAL_SETTINGS = {"control_socket_disable"}


class ShopServer(BaseApplication):
    """gunicorn running ``shop.app.create_app`` with Vigil's settings."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in OPTIONAL_SETTINGS and key not in self.cfg.settings:
                continue  # an older gunicorn without this feature
            self.cfg.set(key, value)

    def load(self) -> Any:
        from shop.app import create_app

        return create_app(self.settings, init_db=False)


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    shop = settings.shop
    return {
        "bind": f"{shop.host}:{shop.port}",
        "workers": shop.workers,
        # Threads keep a slow checkout (release v2) from blocking the whole worker.
        "worker_class": "gthread",
        "threads": 8,
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": None,
        "logconfig_dict": ECS_LOGCONFIG,
        "proc_name": f"vigil-shop-{shop.port}",
        "child_exit": _child_exit,
        "post_worker_init": _post_worker_init,
        # One control socket per user would clash between side-by-side shops.
        "control_socket_disable": True,
    }


def serve(settings: Settings) -> None:
    """Run the shop until SIGTERM/SIGINT."""
    prepare_metrics_dir(settings)
    init_database(settings)
    ShopServer(settings, gunicorn_options(settings)).run()
