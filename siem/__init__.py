"""The SIEM store: events and samples behind one protocol, several backends.

``siem.model`` holds the types and the ``Store`` protocol, ``siem.memory`` and
``siem.sqlite`` the backends, ``siem.kql`` the event query language and
``siem.backends.open_store(settings)`` opens the configured one.
"""

from __future__ import annotations

from vigil.errors import VigilError


class SiemError(VigilError):
    """The store cannot be opened or used, or a query is wrong."""


class StoreUnavailable(SiemError):
    """The store cannot take writes now: unreachable, timed out, overloaded or read-only.

    Nothing is wrong with the data: a writer retries the same write later
    (the collector's sink backs off and spools, see ``collectors.sink``).
    """
