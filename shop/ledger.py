"""The simulated gateways' own ledgers: what each gateway says it authorised and captured.

Real gateways keep their own books and offer them through a transactions API;
the simulators write theirs to the ``gateway_transactions`` table, read back
with :func:`transactions` (and ``GET /api/admin/gateways/<name>/transactions``).
The reconciliation in ``collectors/payments.py`` compares them with the orders.

Ledger faults (``ledger_faults`` in the admin faults API) make a gateway's
books disagree with the shop the way real ones do:

- ``lost_capture``: an approved order is marked paid but the capture is not recorded;
- ``double_capture``: the capture is recorded twice;
- ``amount_mismatch``: the capture is one cent more than the order total;
- ``currency_mismatch``: the capture is recorded in another currency;
- ``capture_without_order``: a declined or failed payment is captured anyway.
"""

from __future__ import annotations

import datetime as dt
import secrets
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shop.models import GatewayTransaction, Order, iso_utc

if TYPE_CHECKING:
    from shop.context import ShopContext

LEDGER_FAULTS = (
    "amount_mismatch",
    "capture_without_order",
    "currency_mismatch",
    "double_capture",
    "lost_capture",
)


def _txn_id(gateway: str) -> str:
    return f"{gateway[:3]}_{secrets.token_hex(12)}"


def _record(
    session: Session, gateway: str, kind: str, order_ref: str, amount: Decimal, currency: str
) -> GatewayTransaction:
    txn = GatewayTransaction(
        gateway=gateway,
        txn_id=_txn_id(gateway),
        kind=kind,
        order_ref=order_ref,
        amount=amount,
        currency=currency,
    )
    session.add(txn)
    return txn


def record_authorisation(session: Session, order: Order) -> None:
    """The gateway approved ``order``'s amount."""
    _record(session, order.gateway, "authorisation", order.public_id, order.total, order.currency)


def record_capture(session: Session, shop: ShopContext, order: Order) -> None:
    """The gateway captured ``order``'s amount, as the ledger faults in force distort it."""
    faults = set(shop.faults.current().ledger_faults)
    if "lost_capture" in faults:
        return
    amount = order.total + Decimal("0.01") if "amount_mismatch" in faults else order.total
    currency = order.currency
    if "currency_mismatch" in faults:
        currency = "USD" if order.currency != "USD" else "EUR"
    _record(session, order.gateway, "capture", order.public_id, amount, currency)
    if "double_capture" in faults:
        _record(session, order.gateway, "capture", order.public_id, amount, currency)


def record_failed(session: Session, shop: ShopContext, order: Order) -> None:
    """A payment the shop saw fail: only ``capture_without_order`` puts it in the ledger."""
    if "capture_without_order" in shop.faults.current().ledger_faults:
        _record(session, order.gateway, "capture", order.public_id, order.total, order.currency)


def transactions(
    session: Session, gateway: str, *, since: dt.datetime | None = None, limit: int = 1000
) -> list[GatewayTransaction]:
    """``gateway``'s ledger entries from ``since`` on, oldest first, at most ``limit``."""
    query = select(GatewayTransaction).where(GatewayTransaction.gateway == gateway)
    if since is not None:
        query = query.where(GatewayTransaction.created_at >= since)
    query = query.order_by(GatewayTransaction.created_at, GatewayTransaction.id).limit(limit)
    return list(session.scalars(query))


def transaction_json(txn: GatewayTransaction) -> dict[str, Any]:
    """A ledger entry as the transactions API shows it."""
    return {
        "txn_id": txn.txn_id,
        "gateway": txn.gateway,
        "kind": txn.kind,
        "order_ref": txn.order_ref,
        "amount": str(txn.amount),
        "currency": txn.currency,
        "created_at": iso_utc(txn.created_at),
    }
