"""Shop admin API: products and stock, customers, coupons.

Every route checks the admin key first (``require_admin``) and every change
writes an audit event with the fields it changed, before and after, so the
SIEM can answer "who changed this price, and from what".
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from flask import Blueprint
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shop import accounts, catalog
from shop.carts import normalise_code
from shop.context import audit, db, require_admin
from shop.models import LANGUAGES, Category, Coupon, Customer, Product, iso_utc
from shop.validation import (
    ApiError,
    get_bool,
    get_decimal,
    get_int,
    get_str,
    json_body,
    not_found,
    query_int,
    require_int,
    require_str,
)

bp = Blueprint("admin_catalog", __name__)

MAX_STOCK = 1_000_000
MIN_PRICE, MAX_PRICE = Decimal("0.01"), Decimal("100000")
GROUPS = ("retail", "wholesale", "staff")
COUPON_KINDS = ("percent", "fixed")
COUPON_LIMITS = {"percent": Decimal("100"), "fixed": Decimal("10000")}
SKU_RE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,31}$")
CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,63}$")
IMAGE_RE = re.compile(r"^(/|https?://)[^\s\"'<>]*$")
EXPIRY_RANGE = (dt.datetime(2000, 1, 1, tzinfo=dt.UTC), dt.datetime(9998, 12, 31, tzinfo=dt.UTC))
PRODUCT_FIELDS = ("price_eur", "stock", "names", "descriptions", "active", "category", "image_url")


def _plain(value: Any) -> Any:
    """A JSON-serialisable form of a column value, for responses and audit events."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, Category):
        return value.slug
    if isinstance(value, dict):
        return dict(value)
    return value


def _apply(obj: Any, changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set the attributes that differ; return (before, after) of just those."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name, value in changes.items():
        old = getattr(obj, name)
        if _plain(old) == _plain(value):
            continue
        before[name], after[name] = _plain(old), _plain(value)
        setattr(obj, name, value)
    return before, after


def _only(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    # A typo such as "prize_eur" must not be ignored silently.
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"unknown field {unknown[0]!r:.40}; allowed are {', '.join(allowed)}",
            unknown[0],
        )


def _flag(data: dict[str, Any], field: str, default: bool | None = None) -> bool:
    value = get_bool(data, field, default)
    if value is None:
        raise ApiError(400, "invalid_type", f"'{field}' must be true or false", field)
    return value


def _paging() -> tuple[int, int]:
    page = query_int("page", default=1, minimum=1, maximum=10000)
    return page, query_int("per_page", default=50, minimum=1, maximum=200)


def _paged(items: list[dict[str, Any]], page: int, per_page: int, total: int) -> dict[str, Any]:
    return {
        "items": items,
        "page": page,
        "per_page": per_page,
        "total": total,
        "pages": catalog.page_count(total, per_page),
    }


# -- products ---------------------------------------------------------------------------


def product_json(product: Product) -> dict[str, Any]:
    """A product as the admin sees it: EUR price, active flag, every language."""
    return {
        "id": product.id,
        "sku": product.sku,
        "category": product.category.slug,
        "price_eur": str(product.price_eur),
        "stock": product.stock,
        "active": product.active,
        "image_url": product.image_url,
        "names": dict(product.names),
        "descriptions": dict(product.descriptions),
        "created_at": iso_utc(product.created_at),
    }


def _texts(data: dict[str, Any], field: str, *, max_len: int) -> dict[str, str] | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(
            400,
            "invalid_type",
            f"'{field}' must be an object keyed by language ({', '.join(LANGUAGES)})",
            field,
        )
    texts: dict[str, str] = {}
    for lang in value:
        if lang not in LANGUAGES:
            raise ApiError(
                400,
                "unknown_language",
                f"'{field}' has unknown language {lang!r:.20}; use {', '.join(LANGUAGES)}",
                field,
            )
        texts[lang] = require_str(value, lang, min_len=1, max_len=max_len)
    return texts


def _image_url(data: dict[str, Any]) -> str | None:
    url = get_str(data, "image_url", required=False, max_len=255)
    if url is not None and not IMAGE_RE.match(url):
        raise ApiError(
            400,
            "invalid_value",
            "'image_url' must be a path starting with / or an http(s) URL",
            "image_url",
        )
    return url


def _product_for_update(product_id: int) -> Product:
    return catalog.get_product(db(), product_id, include_inactive=True)


@bp.get("/api/admin/products")
def list_products() -> Any:
    """All products, deactivated ones included."""
    require_admin()
    page, per_page = _paging()
    items, total = catalog.list_products(
        db(), q=None, category=None, page=page, per_page=per_page, sort=None, include_inactive=True
    )
    return _paged([product_json(p) for p in items], page, per_page, total)


@bp.post("/api/admin/products")
def create_product() -> Any:
    """``{sku, category, price_eur, stock, names: {en, ...}, descriptions, image_url}`` → 201."""
    actor = require_admin()
    data = json_body()
    _only(data, ("sku", *PRODUCT_FIELDS))
    sku = require_str(data, "sku", min_len=1, max_len=32).upper()
    if not SKU_RE.match(sku):
        raise ApiError(
            400, "invalid_value", "'sku' must be letters, digits and dashes, like ELEC-011", "sku"
        )
    category = catalog.category_by_slug(db(), require_str(data, "category"))
    names = _texts(data, "names", max_len=255)
    if not names or "en" not in names:
        raise ApiError(
            400, "missing_field", "'names' needs at least the English name 'en'", "names"
        )
    price = get_decimal(data, "price_eur", minimum=MIN_PRICE, maximum=MAX_PRICE)
    stock = get_int(data, "stock", minimum=0, maximum=MAX_STOCK, required=False, default=0)
    active = _flag(data, "active", default=True)
    taken = ApiError(409, "duplicate_sku", f"a product with SKU {sku} already exists", "sku")
    if db().scalar(select(Product.id).where(Product.sku == sku)) is not None:
        raise taken
    product = Product(
        sku=sku,
        category=category,
        price_eur=price,
        stock=stock,
        names=names,
        descriptions=_texts(data, "descriptions", max_len=2000) or {},
        image_url=_image_url(data) or "",
        active=active,
    )
    product.refresh_search_text()
    db().add(product)
    try:
        db().flush()
    except IntegrityError:
        raise taken from None
    rv = product_json(product)
    audit("product-create", actor=actor, target=f"product:{sku}", before=None, after=rv)
    return rv, 201


@bp.get("/api/admin/products/<int:product_id>")
def get_product(product_id: int) -> Any:
    require_admin()
    return product_json(_product_for_update(product_id))


@bp.patch("/api/admin/products/<int:product_id>")
def update_product(product_id: int) -> Any:
    """Change any of price_eur, stock, names, descriptions, active, category, image_url."""
    actor = require_admin()
    data = json_body()
    _only(data, PRODUCT_FIELDS)
    product = _product_for_update(product_id)
    changes: dict[str, Any] = {}
    if "price_eur" in data:
        changes["price_eur"] = get_decimal(data, "price_eur", minimum=MIN_PRICE, maximum=MAX_PRICE)
    if "stock" in data:
        changes["stock"] = require_int(data, "stock", minimum=0, maximum=MAX_STOCK)
    for field, max_len in (("names", 255), ("descriptions", 2000)):
        texts = _texts(data, field, max_len=max_len)
        if texts is not None:
            # Languages not given keep their text; assign a new dict so the JSON is saved.
            changes[field] = {**getattr(product, field), **texts}
    if "active" in data:
        changes["active"] = _flag(data, "active")
    if "category" in data:
        changes["category"] = catalog.category_by_slug(db(), require_str(data, "category"))
    if "image_url" in data:
        changes["image_url"] = _image_url(data) or ""
    before, after = _apply(product, changes)
    if before or after:
        product.refresh_search_text()
        db().flush()
        audit(
            "product-update",
            actor=actor,
            target=f"product:{product.sku}",
            before=before,
            after=after,
        )
    return product_json(product)


@bp.delete("/api/admin/products/<int:product_id>")
def delete_product(product_id: int) -> Any:
    """Deactivate a product: it leaves the catalogue, its orders keep it."""
    actor = require_admin()
    product = _product_for_update(product_id)
    before, after = _apply(product, {"active": False})
    if before:
        db().flush()
        audit(
            "product-delete",
            actor=actor,
            target=f"product:{product.sku}",
            before=before,
            after=after,
        )
    return product_json(product)


@bp.post("/api/admin/products/<int:product_id>/stock")
def adjust_stock(product_id: int) -> Any:
    """``{"delta": n}`` adds (or takes) stock, ``{"stock": n}`` sets it; never below 0 (409)."""
    actor = require_admin()
    data = json_body()
    _only(data, ("delta", "stock"))
    if ("delta" in data) == ("stock" in data):
        raise ApiError(400, "invalid_body", "send exactly one of 'delta' or 'stock'")
    # Lock the row: checkouts take stock concurrently, a delta must apply to the latest value.
    product = db().scalar(
        select(Product)
        .where(Product.id == _product_for_update(product_id).id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if product is None:
        raise not_found("product", product_id)
    if "delta" in data:
        delta = require_int(data, "delta", minimum=-MAX_STOCK, maximum=MAX_STOCK)
        new_stock = product.stock + delta
    else:
        new_stock = require_int(data, "stock", minimum=0, maximum=MAX_STOCK)
    if new_stock < 0:
        raise ApiError(
            409,
            "negative_stock",
            f"{product.sku} has {product.stock} in stock; "
            f"a change of {new_stock - product.stock} would make it negative",
            "delta",
        )
    if new_stock > MAX_STOCK:
        raise ApiError(400, "out_of_range", f"stock must stay at most {MAX_STOCK}", "delta")
    before, after = _apply(product, {"stock": new_stock})
    db().flush()
    audit(
        "stock-adjust",
        actor=actor,
        target=f"product:{product.sku}",
        before=before or {"stock": new_stock},
        after=after or {"stock": new_stock},
    )
    return product_json(product)


# -- customers --------------------------------------------------------------------------


def customer_json(customer: Customer) -> dict[str, Any]:
    return {**accounts.customer_json(customer), "created_at": iso_utc(customer.created_at)}


@bp.get("/api/admin/customers")
def list_customers() -> Any:
    require_admin()
    page, per_page = _paging()
    total = db().scalar(select(func.count()).select_from(Customer)) or 0
    rows = db().scalars(
        select(Customer).order_by(Customer.id).offset((page - 1) * per_page).limit(per_page)
    )
    return _paged([customer_json(c) for c in rows], page, per_page, total)


@bp.patch("/api/admin/customers/<int:customer_id>")
def update_customer(customer_id: int) -> Any:
    """``{"group": retail|wholesale|staff, "vip": bool}``, either or both."""
    actor = require_admin()
    data = json_body()
    _only(data, ("group", "vip"))
    customer = db().get(Customer, customer_id) if customer_id <= catalog.MAX_ID else None
    if customer is None:
        raise not_found("customer", customer_id)
    changes: dict[str, Any] = {}
    if "group" in data:
        group = require_str(data, "group")
        if group not in GROUPS:
            raise ApiError(
                400, "invalid_value", f"'group' must be one of {', '.join(GROUPS)}", "group"
            )
        changes["group"] = group
    if "vip" in data:
        changes["vip"] = _flag(data, "vip")
    before, after = _apply(customer, changes)
    if before:
        db().flush()
        audit(
            "customer-update",
            actor=actor,
            target=f"customer:{customer.email}",
            before=before,
            after=after,
        )
    return customer_json(customer)


# -- coupons ----------------------------------------------------------------------------


def coupon_json(coupon: Coupon) -> dict[str, Any]:
    return {
        "code": coupon.code,
        "kind": coupon.kind,
        "value": str(coupon.value),
        "min_order_eur": str(coupon.min_order_eur),
        "expires_at": iso_utc(coupon.expires_at),
        "max_uses": coupon.max_uses,
        "uses": coupon.uses,
        "active": coupon.active,
    }


def _expires_at(data: dict[str, Any]) -> dt.datetime | None:
    raw = get_str(data, "expires_at", required=False, max_len=64)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(
            400,
            "invalid_value",
            "'expires_at' must be ISO 8601, like 2030-12-31T23:59:59Z",
            "expires_at",
        ) from None
    value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    try:
        value = value.astimezone(dt.UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is in year 0
        value = EXPIRY_RANGE[0] - dt.timedelta(days=1)
    if not EXPIRY_RANGE[0] <= value <= EXPIRY_RANGE[1]:
        # Outside this, PostgreSQL stores years Python cannot read back (1 BC, 10000).
        raise ApiError(
            400,
            "out_of_range",
            "'expires_at' must be between 2000-01-01 and 9998-12-31",
            "expires_at",
        )
    return value


def _max_uses(data: dict[str, Any]) -> int | None:
    return get_int(data, "max_uses", minimum=0, maximum=10_000_000, required=False)


def _coupon(code: str) -> Coupon:
    coupon = db().get(Coupon, normalise_code(code))
    if coupon is None:
        raise not_found("coupon", code)
    return coupon


@bp.get("/api/admin/coupons")
def list_coupons() -> Any:
    require_admin()
    return {"coupons": [coupon_json(c) for c in db().scalars(select(Coupon).order_by(Coupon.code))]}


@bp.post("/api/admin/coupons")
def create_coupon() -> Any:
    """``{code, kind: percent|fixed, value, min_order_eur, expires_at, max_uses}`` → 201."""
    actor = require_admin()
    data = json_body()
    _only(data, ("code", "kind", "value", "min_order_eur", "expires_at", "max_uses", "active"))
    code = normalise_code(require_str(data, "code", min_len=1, max_len=64))
    if not CODE_RE.match(code):
        raise ApiError(
            400, "invalid_value", "'code' must be letters, digits, dashes and underscores", "code"
        )
    kind = require_str(data, "kind")
    if kind not in COUPON_KINDS:
        raise ApiError(
            400, "invalid_value", f"'kind' must be one of {', '.join(COUPON_KINDS)}", "kind"
        )
    value = get_decimal(data, "value", minimum=Decimal("0.01"), maximum=COUPON_LIMITS[kind])
    min_order = get_decimal(
        data, "min_order_eur", minimum=Decimal("0"), maximum=Decimal("1000000"), required=False
    )
    taken = ApiError(409, "duplicate_coupon", f"coupon {code} already exists", "code")
    if db().get(Coupon, code) is not None:
        raise taken
    coupon = Coupon(
        code=code,
        kind=kind,
        value=value,
        min_order_eur=min_order or Decimal("0.00"),
        expires_at=_expires_at(data),
        max_uses=_max_uses(data),
        uses=0,
        active=_flag(data, "active", default=True),
    )
    db().add(coupon)
    try:
        db().flush()
    except IntegrityError:
        raise taken from None
    rv = coupon_json(coupon)
    audit("coupon-create", actor=actor, target=f"coupon:{code}", before=None, after=rv)
    return rv, 201


@bp.patch("/api/admin/coupons/<code>")
def update_coupon(code: str) -> Any:
    """Change ``active``, ``max_uses`` or ``expires_at``; null clears a limit."""
    actor = require_admin()
    data = json_body()
    _only(data, ("active", "max_uses", "expires_at"))
    coupon = _coupon(code)
    changes: dict[str, Any] = {}
    if "active" in data:
        changes["active"] = _flag(data, "active")
    if "max_uses" in data:
        changes["max_uses"] = _max_uses(data)
    if "expires_at" in data:
        changes["expires_at"] = _expires_at(data)
    before, after = _apply(coupon, changes)
    if before:
        db().flush()
        audit(
            "coupon-update", actor=actor, target=f"coupon:{coupon.code}", before=before, after=after
        )
    return coupon_json(coupon)
