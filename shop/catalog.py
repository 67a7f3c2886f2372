"""The catalogue: categories, product search and listing, product JSON and reviews.

Plain functions over a Session, shared by the JSON API and the HTML pages.
Search matches ``Product.search_text``, which holds the SKU, names and
descriptions in every language lower-cased, so one LIKE finds a product by a
German, Polish or Chinese word as well as by its SKU.

Example::

    products, total = list_products(session, q="kopfhörer", category=None, page=1,
                                    per_page=20, sort=None)
    [product_json(p, "de", "EUR", currencies) for p in products]
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from shop.models import LANGUAGES, Category, Customer, Product, Review, iso_utc
from shop.money import Currencies
from shop.validation import ApiError, not_found

SORTS = ("name", "price", "-price", "rating")
# Ids are 32-bit integers in both databases; larger numbers in a URL simply do not exist.
MAX_ID = 2**31 - 1
MAX_QUERY_LEN = 100
MAX_QUERY_TERMS = 10


def check_lang(lang: str | None) -> str:
    """The language code, ``en`` when absent, or a 400 naming the supported ones."""
    if lang is None or lang == "":
        return "en"
    if lang not in LANGUAGES:
        raise ApiError(
            400,
            "unknown_language",
            f"unknown language {lang!r:.20}; use one of {', '.join(LANGUAGES)}",
            "lang",
        )
    return lang


def check_sort(sort: str | None) -> str | None:
    """The sort key, None for the default (by id), or a 400 naming the supported ones."""
    if sort is None or sort == "":
        return None
    if sort not in SORTS:
        raise ApiError(
            400, "unknown_sort", f"unknown sort {sort!r:.20}; use one of {', '.join(SORTS)}", "sort"
        )
    return sort


def localised(texts: dict[str, str], lang: str) -> str:
    """The text in ``lang``, falling back to English."""
    return texts.get(lang) or texts.get("en", "")


def list_categories(session: Session) -> list[Category]:
    """All categories in catalogue order."""
    return list(session.scalars(select(Category).order_by(Category.id)))


def category_by_slug(session: Session, slug: str, field: str = "category") -> Category:
    """The category with ``slug``, or a 400 naming the known slugs."""
    category = session.scalar(select(Category).where(Category.slug == slug))
    if category is None:
        known = ", ".join(c.slug for c in list_categories(session))
        raise ApiError(
            400, "unknown_category", f"unknown category {slug!r:.40}; use one of {known}", field
        )
    return category


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_terms(q: str | None) -> list[str]:
    """The lower-cased words of a search query; a 400 when it is absurdly long."""
    if not q:
        return []
    if len(q) > MAX_QUERY_LEN:
        raise ApiError(
            400,
            "invalid_value",
            f"the search query must be at most {MAX_QUERY_LEN} characters",
            "q",
        )
    return q.lower().split()[:MAX_QUERY_TERMS]


def list_products(
    session: Session,
    *,
    q: str | None,
    category: str | None,
    page: int,
    per_page: int,
    sort: str | None,
    lang: str = "en",
    include_inactive: bool = False,
) -> tuple[list[Product], int]:
    """One page of products matching every word of ``q`` and the category slug, and the total.

    ``sort`` is one of ``SORTS`` or None (by id); ``lang`` picks the name for ``sort="name"``.
    Reviews and categories are loaded with the page, ready for ``product_json``.
    """
    conditions: list[ColumnElement[bool]] = []
    if not include_inactive:
        conditions.append(Product.active.is_(True))
    if category:
        conditions.append(Product.category_id == category_by_slug(session, category).id)
    for term in search_terms(q):
        conditions.append(Product.search_text.like(_like_pattern(term), escape="\\"))

    total = session.scalar(select(func.count()).select_from(Product).where(*conditions)) or 0
    stmt = (
        select(Product)
        .where(*conditions)
        .options(joinedload(Product.category), selectinload(Product.reviews))
    )
    sort = check_sort(sort)
    if sort == "name":
        stmt = stmt.order_by(Product.names[check_lang(lang)].as_string(), Product.id)
    elif sort == "price":
        stmt = stmt.order_by(Product.price_eur.asc(), Product.id)
    elif sort == "-price":
        stmt = stmt.order_by(Product.price_eur.desc(), Product.id)
    elif sort == "rating":
        ratings = (
            select(Review.product_id, func.avg(Review.rating).label("average"))
            .group_by(Review.product_id)
            .subquery()
        )
        stmt = stmt.outerjoin(ratings, ratings.c.product_id == Product.id).order_by(
            func.coalesce(ratings.c.average, 0).desc(), Product.id
        )
    else:
        stmt = stmt.order_by(Product.id)
    stmt = stmt.offset((page - 1) * per_page).limit(per_page)
    return list(session.scalars(stmt).unique()), total


def page_count(total: int, per_page: int) -> int:
    """How many pages of ``per_page`` hold ``total`` items."""
    return math.ceil(total / per_page) if total else 0


def get_product(session: Session, product_id: int, *, include_inactive: bool = False) -> Product:
    """The product, or a 404 (also for a deactivated one unless ``include_inactive``)."""
    product = session.get(Product, product_id) if 0 < product_id <= MAX_ID else None
    if product is None or not (product.active or include_inactive):
        raise not_found("product", product_id)
    return product


def average_rating(reviews: list[Review]) -> float | None:
    """The mean rating to one decimal (half-up), None without reviews."""
    if not reviews:
        return None
    mean = Decimal(sum(r.rating for r in reviews)) / len(reviews)
    return float(mean.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def product_json(
    product: Product, lang: str, currency: str, currencies: Currencies
) -> dict[str, Any]:
    """A product as shown in listings, priced in ``currency``."""
    return {
        "id": product.id,
        "sku": product.sku,
        "category": product.category.slug,
        "name": localised(product.names, lang),
        "description": localised(product.descriptions, lang),
        "price": str(currencies.convert(product.price_eur, currency)),
        "currency": currency,
        "stock": product.stock,
        "in_stock": product.stock > 0,
        "image_url": product.image_url,
        "rating": average_rating(product.reviews),
        "review_count": len(product.reviews),
    }


def review_json(review: Review) -> dict[str, Any]:
    return {
        "author": review.author,
        "rating": review.rating,
        "text": review.text,
        "created_at": iso_utc(review.created_at),
    }


def product_detail_json(
    product: Product, lang: str, currency: str, currencies: Currencies
) -> dict[str, Any]:
    """``product_json`` plus every language's texts and the reviews, newest first."""
    rv = product_json(product, lang, currency, currencies)
    rv["names"] = dict(product.names)
    rv["descriptions"] = dict(product.descriptions)
    rv["reviews"] = [review_json(r) for r in sorted(product.reviews, key=lambda r: -r.id)]
    return rv


def add_review(
    session: Session, product: Product, customer: Customer, rating: int, text: str
) -> Review:
    """Add a customer's review; the author shown is their name, never their e-mail."""
    if not 1 <= rating <= 5:
        raise ApiError(400, "out_of_range", "'rating' must be between 1 and 5", "rating")
    review = Review(author=(customer.name or "Customer")[:120], rating=rating, text=text)
    product.reviews.append(review)
    session.flush()
    return review
