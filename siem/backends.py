"""Open the configured store backend: ``store.backend`` → class, through one registry."""

from __future__ import annotations

import os
from collections.abc import Callable

from siem.model import Store
from vigil.errors import ConfigError
from vigil.settings import Settings


def _sqlite(settings: Settings, collector: bool) -> Store:
    from siem.sqlite import SqliteStore

    path = settings.store_path
    path.parent.mkdir(parents=True, exist_ok=True)
    # The collector must notice a locked store quickly (then it retries and spools);
    # the other processes can wait.
    busy = settings.store.sqlite_busy_timeout_s if collector else None
    return SqliteStore(path, busy_timeout_s=busy)


def _memory(settings: Settings, collector: bool) -> Store:
    from siem.memory import MemoryStore

    return MemoryStore()


API_KEY_ENV = "VIGIL_STORE_API_KEY"
"""Where the Elasticsearch API key comes from: the environment only, never a file."""


def _elasticsearch(settings: Settings, collector: bool) -> Store:
    from siem.elasticsearch import ElasticsearchStore

    return ElasticsearchStore(
        settings.store.url,
        api_key=os.environ.get(API_KEY_ENV) or None,
        prefix=settings.store.index_prefix,
        compat_headers=settings.store.es_compat_headers,
        request_timeout_s=settings.store.request_timeout_s,
        refresh=settings.store.refresh,
    )


BACKENDS: dict[str, Callable[[Settings, bool], Store]] = {
    "sqlite": _sqlite,
    "memory": _memory,
    "elasticsearch": _elasticsearch,
}


def open_store(settings: Settings, *, collector: bool = False) -> Store:
    """The store named by ``store.backend``; an unknown name is a config error.

    ``collector``: opened by ``vigil collect`` (SQLite then waits for a lock only
    ``store.sqlite_busy_timeout_s``).
    """
    try:
        factory = BACKENDS[settings.store.backend]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigError(
            f"store.backend: unknown backend {settings.store.backend!r}; use one of {known}"
        ) from None
    return factory(settings, collector)
