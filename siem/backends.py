"""Open the configured store backend: ``store.backend`` → class, through one registry."""

from __future__ import annotations

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


BACKENDS: dict[str, Callable[[Settings], Store]] = {"sqlite": _sqlite, "memory": _memory}


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
