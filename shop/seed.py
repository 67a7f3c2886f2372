"""Seed an empty shop database with the catalogue and the standard coupons."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from importlib import resources
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shop.models import Category, Coupon, Product, Review, utcnow

# The coupons every fresh shop has; the admin API adds more.
COUPONS: list[dict[str, Any]] = [
    {"code": "WELCOME10", "kind": "percent", "value": Decimal("10")},
    {"code": "SAVE20", "kind": "fixed", "value": Decimal("20"), "min_order_eur": Decimal("100")},
    {
        "code": "BLACKFRIDAY",
        "kind": "percent",
        "value": Decimal("30"),
        "min_order_eur": Decimal("50"),
        "max_uses": 1000,
    },
    {
        "code": "EXPIRED5",
        "kind": "percent",
        "value": Decimal("5"),
        "expires_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    },
]


def load_catalog() -> dict[str, Any]:
    """The seed catalogue shipped in ``shop/data/catalog.json``."""
    text = resources.files("shop").joinpath("data/catalog.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def seed(session: Session) -> bool:
    """Fill an empty database; return False when products already exist."""
    if session.scalar(select(func.count()).select_from(Product)):
        return False
    catalog = load_catalog()
    categories: dict[str, Category] = {}
    for cat in catalog["categories"]:
        categories[cat["slug"]] = Category(slug=cat["slug"], names=cat["names"])
        session.add(categories[cat["slug"]])
    now = utcnow()
    for item in catalog["products"]:
        product = Product(
            sku=item["sku"],
            category=categories[item["category"]],
            price_eur=Decimal(item["price_eur"]),
            stock=int(item["stock"]),
            image_url=item["image_url"],
            names=item["names"],
            descriptions=item["descriptions"],
            created_at=now,
        )
        product.refresh_search_text()
        for review in item.get("reviews", []):
            product.reviews.append(
                Review(
                    author=review["author"],
                    rating=int(review["rating"]),
                    text=review["text"],
                    created_at=now,
                )
            )
        session.add(product)
    for coupon in COUPONS:
        if session.get(Coupon, coupon["code"]) is None:
            session.add(Coupon(**coupon))
    session.flush()
    return True
