"""Open the configured store backend: ``store.backend`` → class, through one registry."""

from __future__ import annotations

import os
from collections.abc import Callable

from siem.model import Store
from vigil.errors import ConfigError
from vigil.settings import Settings


def _sqlite(settings: Settings) -> Store:
    from siem.sqlite import SqliteStore

    path = settings.store_path
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path)


def _memory(settings: Settings) -> Store:
    from siem.memory import MemoryStore

    return MemoryStore()


API_KEY_ENV = "VIGIL_STORE_API_KEY"
"""Where the Elasticsearch API key comes from: the environment only, never a file."""


def _elasticsearch(settings: Settings) -> Store:
    from siem.elasticsearch import ElasticsearchStore

    return ElasticsearchStore(
        settings.store.url,
        api_key=os.environ.get(API_KEY_ENV) or None,
        prefix=settings.store.index_prefix,
        compat_headers=settings.store.es_compat_headers,
        request_timeout_s=settings.store.request_timeout_s,
    )


BACKENDS: dict[str, Callable[[Settings], Store]] = {
    "sqlite": _sqlite,
    "memory": _memory,
    "elasticsearch": _elasticsearch,
}


def open_store(settings: Settings) -> Store:
    """The store named by ``store.backend``; an unknown name is a config error."""
    try:
        factory = BACKENDS[settings.store.backend]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigError(
            f"store.backend: unknown backend {settings.store.backend!r}; use one of {known}"
        ) from None
    return factory(settings)
