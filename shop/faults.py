"""Fault injection for drills: latency, errors, a slow database, a gateway outage.

Faults are rows in the shop database so every gunicorn worker (and every
instance sharing the database) sees the same drill. Each process re-reads them
at most once a second. Nothing here is active unless ``shop.faults_enabled``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shop.ledger import LEDGER_FAULTS
from shop.models import FaultSetting
from shop.validation import ApiError, get_decimal, get_int

REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class FaultState:
    """The faults in force. All zero/empty means no drill."""

    latency_ms: int = 0
    error_rate: float = 0.0
    slow_db_ms: int = 0
    gateway_outage: list[str] = field(default_factory=list)
    # Disagreements between a gateway's ledger and the shop (shop.ledger.LEDGER_FAULTS).
    ledger_faults: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    """Cached view of the fault rows, refreshed at most once a second."""

    def __init__(self, sessions: sessionmaker[Session], enabled: bool) -> None:
        self.sessions = sessions
        self.enabled = enabled
        self.state = FaultState()
        self._loaded_at = 0.0

    def current(self) -> FaultState:
        if not self.enabled:
            return self.state
        now = time.monotonic()
        if now - self._loaded_at >= REFRESH_SECONDS:
            self._loaded_at = now
            with self.sessions() as session:
                self.state = read_faults(session)
        return self.state

    def slow_db_seconds(self) -> float:
        """Extra delay per statement; reads only the cache (called inside queries)."""
        return self.state.slow_db_ms / 1000.0

    def invalidate(self) -> None:
        self._loaded_at = 0.0


def read_faults(session: Session) -> FaultState:
    values = {row.name: row.value for row in session.scalars(select(FaultSetting))}
    return FaultState(
        latency_ms=int(values.get("latency_ms", 0)),
        error_rate=float(values.get("error_rate", 0.0)),
        slow_db_ms=int(values.get("slow_db_ms", 0)),
        gateway_outage=list(values.get("gateway_outage", [])),
        ledger_faults=list(values.get("ledger_faults", [])),
    )


def update_faults(session: Session, data: dict[str, Any], gateways: list[str]) -> FaultState:
    """Validate and store the faults given in ``data``; keys left out keep their value."""
    known = {"latency_ms", "error_rate", "slow_db_ms", "gateway_outage", "ledger_faults"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"unknown fault {unknown[0]!r:.40}; known faults: {', '.join(sorted(known))}",
            unknown[0],
        )
    updates: dict[str, Any] = {}
    if "latency_ms" in data:
        updates["latency_ms"] = get_int(data, "latency_ms", minimum=0, maximum=30000)
    if "slow_db_ms" in data:
        updates["slow_db_ms"] = get_int(data, "slow_db_ms", minimum=0, maximum=10000)
    if "error_rate" in data:
        rate = get_decimal(data, "error_rate", minimum=0, maximum=1)  # type: ignore[arg-type]
        updates["error_rate"] = float(rate) if rate is not None else 0.0
    if "gateway_outage" in data:
        names = data["gateway_outage"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ApiError(
                400,
                "invalid_type",
                "'gateway_outage' must be a list of gateway names",
                "gateway_outage",
            )
        for name in names:
            if name not in gateways:
                raise ApiError(
                    400,
                    "unknown_gateway",
                    f"unknown gateway {name!r:.40}; use one of {', '.join(gateways)}",
                    "gateway_outage",
                )
        updates["gateway_outage"] = sorted(set(names))
    if "ledger_faults" in data:
        updates["ledger_faults"] = _ledger_faults(data["ledger_faults"])
    for name, value in updates.items():
        row = session.get(FaultSetting, name)
        if row is None:
            session.add(FaultSetting(name=name, value=value))
        else:
            row.value = value
    session.flush()
    return read_faults(session)


def _ledger_faults(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ApiError(
            400, "invalid_type", "'ledger_faults' must be a list of fault names", "ledger_faults"
        )
    for name in value:
        if name not in LEDGER_FAULTS:
            raise ApiError(
                400,
                "unknown_fault",
                f"unknown ledger fault {name!r:.40}; use one of {', '.join(LEDGER_FAULTS)}",
                "ledger_faults",
            )
    return sorted(set(value))
