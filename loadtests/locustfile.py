"""Shopper journeys against the shop's JSON API (docs/shop.md).

A ``Shopper`` browses the catalogue, searches in its language, views products,
fills a cart, sometimes applies a coupon, checks out and pays, and tracks its
orders — weighted like a sale day, where most visits only look. Requests are
named by route template (``/api/carts/[id]/items``) so statistics are per
route, like the shop's own ``route`` label. A 402 decline or a 409 sold-out
at checkout is a business outcome, not a failed request; 5xx are failures.

Runs under ``vigil loadtest`` or plain locust::

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8001
"""

from __future__ import annotations

import random
from typing import Any

from locust import HttpUser, between, task

from loadtests.results import CHECKOUT_ROUTE
from loadtests.shoppers import (
    COUPON,
    CURRENCIES,
    GATEWAYS,
    LANGUAGES,
    PAYMENTS_PER_IDENTITY,
    SEARCH_TERMS,
    Identity,
    new_identity,
)

CATALOGUE_PAGES = 3
PER_PAGE = 20

# Answers of POST /api/checkout that are outcomes of the sale, not errors.
_BUSINESS_OUTCOMES = {201, 402, 409}


class Shopper(HttpUser):
    """One visitor of the shop on a sale day."""

    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.lang = self.rng.choice(LANGUAGES)
        self.currency = self.rng.choice(CURRENCIES)
        self.category_slugs: list[str] = []
        self.stock: dict[int, int] = {}  # product id → stock last seen
        self.cart_id: str | None = None
        self.cart_items = 0
        self.orders: list[str] = []
        self.payments = 0
        self._take_identity(new_identity(self.rng))
        self.categories()
        self.browse()

    def _take_identity(self, identity: Identity) -> None:
        self.identity = identity
        self.client.headers["X-Forwarded-For"] = identity.client_ip

    def _view(self) -> dict[str, str]:
        return {"lang": self.lang, "currency": self.currency}

    def _remember(self, body: Any) -> None:
        if isinstance(body, dict):
            for item in body.get("items", []):
                self.stock[int(item["id"])] = int(item["stock"])

    @task(1)
    def categories(self) -> None:
        with self.client.get(
            "/api/categories",
            params={"lang": self.lang},
            name="/api/categories",
            catch_response=True,
        ) as resp:
            if resp.status_code == 200:
                self.category_slugs = [c["slug"] for c in resp.json()["categories"]]

    @task(5)
    def browse(self) -> None:
        params = self._view()
        if self.category_slugs and self.rng.random() < 0.4:
            params["category"] = self.rng.choice(self.category_slugs)
        else:
            params["page"] = str(self.rng.randint(1, CATALOGUE_PAGES))
            params["per_page"] = str(PER_PAGE)
        with self.client.get(
            "/api/products", params=params, name="/api/products", catch_response=True
        ) as resp:
            if resp.status_code == 200:
                self._remember(resp.json())

    @task(3)
    def search(self) -> None:
        lang = self.lang if self.rng.random() < 0.8 else self.rng.choice(LANGUAGES)
        params = {**self._view(), "lang": lang, "q": self.rng.choice(SEARCH_TERMS[lang])}
        with self.client.get(
            "/api/products", params=params, name="/api/products", catch_response=True
        ) as resp:
            if resp.status_code == 200:
                self._remember(resp.json())

    @task(4)
    def view_product(self) -> None:
        product_id = self._pick_product()
        if product_id is None:
            return
        self.client.get(
            f"/api/products/{product_id}", params=self._view(), name="/api/products/[id]"
        )

    @task(2)
    def add_to_cart(self) -> None:
        product_id = self._pick_product()
        if product_id is None:
            return
        if self.cart_id is None:
            with self.client.post(
                "/api/carts", params=self._view(), name="/api/carts", catch_response=True
            ) as resp:
                if resp.status_code != 201:
                    resp.failure(f"cart not created: HTTP {resp.status_code}")
                    return
                self.cart_id = str(resp.json()["cart_id"])
                self.cart_items = 0
        quantity = 1 if self.rng.random() < 0.85 else 2
        with self.client.post(
            f"/api/carts/{self.cart_id}/items",
            params=self._view(),
            json={"product_id": product_id, "quantity": quantity},
            name="/api/carts/[id]/items",
            catch_response=True,
        ) as resp:
            if resp.status_code == 200:
                self.cart_items += 1

    @task(1)
    def apply_coupon(self) -> None:
        if self.cart_id is None or not self.cart_items:
            self.add_to_cart()
            return
        self.client.post(
            f"/api/carts/{self.cart_id}/coupon",
            params=self._view(),
            json={"code": COUPON},
            name="/api/carts/[id]/coupon",
        )

    @task(2)
    def checkout(self) -> None:
        if self.cart_id is None or not self.cart_items:
            self.add_to_cart()
            if self.cart_id is None or not self.cart_items:
                return
        body = {
            "cart_id": self.cart_id,
            "email": self.identity.email,
            "currency": self.currency,
            "gateway": self.rng.choice(GATEWAYS),
            "card": self.identity.card(),
        }
        with self.client.post(
            CHECKOUT_ROUTE, json=body, name=CHECKOUT_ROUTE, catch_response=True
        ) as resp:
            if resp.status_code == 201:
                self.orders = [*self.orders[-4:], str(resp.json()["order_id"])]
            if resp.status_code in _BUSINESS_OUTCOMES:
                resp.success()
            else:
                resp.failure(f"checkout failed: HTTP {resp.status_code} {_error_code(resp)}")
        # Paid, declined or failed: this cart is done; the next purchase starts a new one.
        self.cart_id = None
        self.cart_items = 0
        self.payments += 1
        if self.payments % PAYMENTS_PER_IDENTITY == 0:
            self._take_identity(new_identity(self.rng))

    @task(1)
    def track_order(self) -> None:
        if not self.orders:
            self.browse()
            return
        self.client.get(f"/api/orders/{self.rng.choice(self.orders)}", name="/api/orders/[id]")

    def _pick_product(self) -> int | None:
        """A product in stock, favouring well-stocked ones so a long sale rarely sells out."""
        in_stock = [(pid, stock) for pid, stock in self.stock.items() if stock > 0]
        if not in_stock:
            self.browse()
            in_stock = [(pid, stock) for pid, stock in self.stock.items() if stock > 0]
            if not in_stock:
                return None
        ids, weights = zip(*in_stock, strict=True)
        return int(self.rng.choices(ids, weights=weights)[0])


def _error_code(resp: Any) -> str:
    try:
        return str(resp.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
