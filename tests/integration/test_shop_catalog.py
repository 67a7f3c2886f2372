"""Catalogue API: categories, search in every language, filters, paging, detail, reviews."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient

from shop.seed import load_catalog

CATALOG = load_catalog()
PRODUCTS = {p["sku"]: p for p in CATALOG["products"]}


def _texts(product: dict[str, Any]) -> str:
    parts = [product["sku"], *product["names"].values(), *product["descriptions"].values()]
    return " ".join(parts).lower()


def _expected(term: str) -> set[str]:
    return {sku for sku, p in PRODUCTS.items() if term.lower() in _texts(p)}


def _skus(client: FlaskClient, **params: Any) -> list[str]:
    rv = client.get("/api/products", query_string={"per_page": 100, **params})
    assert rv.status_code == 200, rv.json
    return [item["sku"] for item in rv.json["items"]]


def _product_id(client: FlaskClient, sku: str) -> int:
    items = client.get("/api/products", query_string={"q": sku}).json["items"]
    return int(next(i["id"] for i in items if i["sku"] == sku))


def test_categories_localised(client: FlaskClient) -> None:
    rv = client.get("/api/categories?lang=pl")
    assert rv.status_code == 200
    assert rv.json["categories"] == [
        {"slug": c["slug"], "name": c["names"]["pl"]} for c in CATALOG["categories"]
    ]


@pytest.mark.parametrize(
    ("lang", "term"),
    [
        ("en", "headphones"),
        ("de", "Kopfhörer"),
        ("de", "GERÄUSCHUNTERDRÜCKUNG"),
        ("pl", "słuchawki"),
        ("zh", "耳机"),
        ("en", "elec-003"),
    ],
)
def test_products_search_every_language(client: FlaskClient, lang: str, term: str) -> None:
    skus = _skus(client, q=term, lang=lang)
    assert skus, f"nothing found for {term!r}"
    assert set(skus) == _expected(term)


def test_products_search_german_name_shows_german(client: FlaskClient) -> None:
    rv = client.get("/api/products", query_string={"q": "saugroboter", "lang": "de"})
    assert [i["sku"] for i in rv.json["items"]] == ["HOME-007"]
    item = rv.json["items"][0]
    assert item["name"] == "Saugroboter"
    assert item["stock"] == 0
    assert item["in_stock"] is False


def test_products_search_by_sku(client: FlaskClient) -> None:
    assert _skus(client, q="TOYS-010") == ["TOYS-010"]


def test_products_search_all_words_must_match(client: FlaskClient) -> None:
    expected = _expected("wireless") & _expected("mouse")
    assert set(_skus(client, q="wireless mouse")) == expected == {"ELEC-005"}


@pytest.mark.parametrize("term", ["%", "_", "100%", "\\"])
def test_products_search_escapes_like_wildcards(client: FlaskClient, term: str) -> None:
    assert set(_skus(client, q=term)) == _expected(term)


def test_products_category_filter(client: FlaskClient) -> None:
    rv = client.get("/api/products", query_string={"category": "books", "per_page": 100})
    assert rv.json["total"] == 10
    assert {i["category"] for i in rv.json["items"]} == {"books"}
    assert set(_skus(client, category="books", q="python")) == {"BOOK-003"}


def test_products_pagination_totals(client: FlaskClient) -> None:
    seen: list[int] = []
    for page in range(1, 10):
        rv = client.get("/api/products", query_string={"page": page, "per_page": 7})
        assert rv.status_code == 200
        assert (rv.json["total"], rv.json["pages"], rv.json["page"]) == (60, 9, page)
        seen += [i["id"] for i in rv.json["items"]]
    assert len(seen) == len(set(seen)) == 60
    assert client.get("/api/products?page=10&per_page=7").json["items"] == []


def test_products_sort_by_price(client: FlaskClient) -> None:
    rv = client.get("/api/products", query_string={"sort": "price", "per_page": 100})
    prices = [Decimal(i["price"]) for i in rv.json["items"]]
    assert prices == sorted(prices)
    rv = client.get("/api/products", query_string={"sort": "-price", "per_page": 3})
    assert rv.json["items"][0]["sku"] == "ELEC-003"


def test_products_sort_by_name_in_language(client: FlaskClient) -> None:
    rv = client.get("/api/products", query_string={"sort": "name", "lang": "de", "per_page": 100})
    assert rv.status_code == 200
    names = [i["name"] for i in rv.json["items"]]
    assert sorted(names) == sorted(p["names"]["de"] for p in PRODUCTS.values())
    assert names[0] == "27-Zoll-4K-Monitor"


def test_products_sort_by_rating_puts_unreviewed_last(client: FlaskClient) -> None:
    items = client.get("/api/products?sort=rating&per_page=100").json["items"]
    ratings = [i["rating"] for i in items]
    rated = [r for r in ratings if r is not None]
    assert ratings == rated + [None] * (len(ratings) - len(rated))
    assert rated == sorted(rated, reverse=True)


def test_products_price_in_currency(client: FlaskClient) -> None:
    item = client.get("/api/products?q=ELEC-001&currency=pln").json["items"][0]
    expected = (Decimal(PRODUCTS["ELEC-001"]["price_eur"]) * Decimal("4.30")).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP
    )
    assert (item["price"], item["currency"]) == (str(expected), "PLN")


@pytest.mark.parametrize(
    ("params", "field", "hint"),
    [
        ({"category": "garden"}, "category", "electronics"),
        ({"lang": "fr"}, "lang", "en, de, pl, zh"),
        ({"currency": "GBP"}, "currency", "PLN"),
        ({"sort": "popularity"}, "sort", "rating"),
        ({"per_page": 101}, "per_page", "100"),
        ({"page": 0}, "page", "10000"),
        ({"page": "two"}, "page", "integer"),
        ({"q": "x" * 101}, "q", "100"),
    ],
)
def test_products_bad_query_400(
    client: FlaskClient, params: dict[str, Any], field: str, hint: str
) -> None:
    rv = client.get("/api/products", query_string=params)
    assert rv.status_code == 400
    assert rv.json["error"]["field"] == field
    assert hint in rv.json["error"]["message"]


def test_product_detail_with_reviews(client: FlaskClient) -> None:
    pid = _product_id(client, "ELEC-001")
    rv = client.get(f"/api/products/{pid}?lang=de&currency=CNY")
    assert rv.status_code == 200
    seed = PRODUCTS["ELEC-001"]
    body = rv.json
    assert body["name"] == seed["names"]["de"]
    assert body["names"] == seed["names"]
    assert body["descriptions"] == seed["descriptions"]
    assert body["price"] == "1949.92"  # 249.99 × 7.80 = 1949.922
    # ratings 5, 4, 5, 3: mean 4.25 → 4.3 half-up
    assert (body["rating"], body["review_count"]) == (4.3, 4)
    assert sorted(r["author"] for r in body["reviews"]) == sorted(
        r["author"] for r in seed["reviews"]
    )
    assert {"author", "rating", "text", "created_at"} <= set(body["reviews"][0])


def test_product_detail_unknown_404(client: FlaskClient) -> None:
    assert client.get("/api/products/999999").status_code == 404
    assert client.get("/api/products/99999999999999999999").status_code == 404
    assert client.get("/api/products/1?lang=xx").status_code == 400


def _login(client: FlaskClient) -> dict[str, str]:
    client.post(
        "/api/accounts",
        json={"email": "rev@example.com", "password": "s3cret-pass", "name": "Rita"},
    )
    token = client.post(
        "/api/login", json={"email": "rev@example.com", "password": "s3cret-pass"}
    ).json["token"]
    return {"Authorization": f"Bearer {token}"}


def test_review_post_needs_login(client: FlaskClient) -> None:
    rv = client.post("/api/products/1/reviews", json={"rating": 5, "text": "great"})
    assert rv.status_code == 401


def test_review_post_adds_review(client: FlaskClient) -> None:
    headers = _login(client)
    pid = _product_id(client, "HOME-009")  # no reviews yet
    rv = client.post(
        f"/api/products/{pid}/reviews", json={"rating": 4, "text": "Strong coffee"}, headers=headers
    )
    assert rv.status_code == 201
    assert (rv.json["author"], rv.json["rating"]) == ("Rita", 4)
    detail = client.get(f"/api/products/{pid}").json
    assert (detail["rating"], detail["review_count"]) == (4.0, 1)
    assert detail["reviews"][0]["text"] == "Strong coffee"


@pytest.mark.parametrize(
    "body",
    [
        {"rating": 6, "text": "x"},
        {"rating": "5", "text": "x"},
        {"text": "x"},
        {"rating": 3, "text": "x" * 2001},
    ],
)
def test_review_post_invalid_400(client: FlaskClient, body: dict[str, Any]) -> None:
    headers = _login(client)
    assert client.post("/api/products/1/reviews", json=body, headers=headers).status_code == 400
