"""Errors of the collectors subsystem."""

from __future__ import annotations

from vigil.errors import VigilError


class CollectorError(VigilError):
    """The collector cannot start or a collected item cannot be used."""


class LineError(CollectorError):
    """A log line is not an ECS JSON document; it is stored as an error event instead."""
