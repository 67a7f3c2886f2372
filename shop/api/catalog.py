"""Shop API: categories, product search and detail, reviews."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from shop import catalog
from shop.context import ctx, current_customer, db
from shop.validation import json_body, query_int, require_int, require_str

bp = Blueprint("catalog", __name__)

MAX_PAGE = 10000
MAX_PER_PAGE = 100


def _lang() -> str:
    return catalog.check_lang(request.args.get("lang"))


def _currency() -> str:
    return ctx().currencies.check(request.args.get("currency") or None)


@bp.get("/api/categories")
def categories() -> Any:
    """``{"categories": [{"slug", "name"}]}`` with names in ``?lang=``."""
    lang = _lang()
    return {
        "categories": [
            {"slug": c.slug, "name": catalog.localised(c.names, lang)}
            for c in catalog.list_categories(db())
        ]
    }


@bp.get("/api/products")
def products() -> Any:
    """Search and page through active products: ``?q=&category=&lang=&currency=&sort=``."""
    lang = _lang()
    currency = _currency()
    page = query_int("page", default=1, minimum=1, maximum=MAX_PAGE)
    per_page = query_int("per_page", default=20, minimum=1, maximum=MAX_PER_PAGE)
    items, total = catalog.list_products(
        db(),
        q=request.args.get("q"),
        category=request.args.get("category") or None,
        page=page,
        per_page=per_page,
        sort=request.args.get("sort"),
        lang=lang,
    )
    currencies = ctx().currencies
    return {
        "items": [catalog.product_json(p, lang, currency, currencies) for p in items],
        "page": page,
        "per_page": per_page,
        "total": total,
        "pages": catalog.page_count(total, per_page),
    }


@bp.get("/api/products/<int:product_id>")
def product(product_id: int) -> Any:
    """One product with all its languages and its reviews."""
    lang = _lang()
    currency = _currency()
    found = catalog.get_product(db(), product_id)
    return catalog.product_detail_json(found, lang, currency, ctx().currencies)


@bp.post("/api/products/<int:product_id>/reviews")
def add_review(product_id: int) -> Any:
    """A logged-in customer reviews a product: ``{"rating": 1..5, "text"}`` → 201."""
    data = json_body()
    rating = require_int(data, "rating", minimum=1, maximum=5)
    text = require_str(data, "text", max_len=2000)
    found = catalog.get_product(db(), product_id)
    customer = current_customer(required=True)
    assert customer is not None
    review = catalog.add_review(db(), found, customer, rating, text)
    return catalog.review_json(review), 201
