"""What every HTML page shares: preferences, the cart cookie, CSRF and rendering.

The pages keep no server-side session. A visitor's state lives in cookies:
``lang`` and ``currency`` (set from ``?lang=`` / ``?currency=``), ``cart_id``
(the cart's unguessable UUID) and ``csrf_token``, which every form echoes in a
hidden field (the double-submit pattern: another site can make the browser
send the cookie, but cannot read it to fill in the field).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlencode

from flask import Response, g, render_template, request
from sqlalchemy.orm import Session

from shop import accounts, carts, catalog
from shop.context import ctx, current_customer, db
from shop.models import LANGUAGES, Cart
from shop.validation import MAX_TEXT, ApiError

LANG_COOKIE = "lang"
CURRENCY_COOKIE = "currency"
CART_COOKIE = "cart_id"
CSRF_COOKIE = "csrf_token"
CSRF_FIELD = "csrf_token"
TOKEN_COOKIE = "shop_token"

YEAR = 365 * 24 * 3600
CART_LIFETIME = 30 * 24 * 3600

LANGUAGE_LABELS = {"en": "EN", "de": "DE", "pl": "PL", "zh": "中文"}
GATEWAY_LABELS = {"stripe": "Stripe", "adyen": "Adyen", "payu": "PayU"}


@dataclass(frozen=True)
class Preferences:
    """How the visitor wants to see the shop."""

    lang: str
    currency: str


def preferences() -> Preferences:
    """``?lang=``/``?currency=`` (a 400 when unknown), else the cookies, else en/EUR.

    A value given in the query string is remembered in its cookie.
    """
    if "prefs" in g:
        cached: Preferences = g.prefs
        return cached
    currencies = ctx().currencies
    lang_arg = request.args.get("lang")
    if lang_arg:
        lang = catalog.check_lang(lang_arg)
        _set_cookie(LANG_COOKIE, lang, max_age=YEAR)
    else:
        cookie = request.cookies.get(LANG_COOKIE, "")
        lang = cookie if cookie in LANGUAGES else "en"
    currency_arg = request.args.get("currency")
    if currency_arg:
        currency = currencies.check(currency_arg)
        _set_cookie(CURRENCY_COOKIE, currency, max_age=YEAR)
    else:
        # A stale cookie (a currency since removed from the settings) falls back quietly.
        cookie = request.cookies.get(CURRENCY_COOKIE, "").upper()
        currency = cookie if cookie in currencies.rates else "EUR"
    g.prefs = Preferences(lang, currency)
    return g.prefs


def _set_cookie(name: str, value: str, *, max_age: int, only_on_success: bool = False) -> None:
    cookies: dict[str, tuple[str, int, bool]] = g.setdefault("page_cookies", {})
    cookies[name] = (value, max_age, only_on_success)


def _delete_cookie(name: str) -> None:
    _set_cookie(name, "", max_age=0)


def write_cookies(response: Response) -> Response:
    """Attach the cookies the request decided on (``after_request`` of the pages).

    A new cart's cookie is only sent when the request succeeded: after an
    error the app rolls the cart back, and the cookie would point nowhere.
    """
    # Secure over HTTPS: TLS at gunicorn, or X-Forwarded-Proto from a trusted proxy
    # (shop.app.ForwardedProto); never from a header anyone else could send.
    secure = request.is_secure
    for name, (value, max_age, only_on_success) in g.pop("page_cookies", {}).items():
        if only_on_success and response.status_code >= 400:
            continue
        if max_age == 0:
            response.delete_cookie(name, secure=secure, httponly=True, samesite="Lax")
            continue
        response.set_cookie(
            name, value, max_age=max_age, secure=secure, httponly=True, samesite="Lax"
        )
    return response


def remember_login(token: str) -> None:
    """Log the browser in: ``current_customer`` reads this cookie."""
    lifetime = int(accounts.TOKEN_LIFETIME.total_seconds())
    _set_cookie(TOKEN_COOKIE, token, max_age=lifetime, only_on_success=True)


def forget_login() -> None:
    _delete_cookie(TOKEN_COOKIE)


def csrf_token() -> str:
    """This browser's CSRF token, minted (and sent as a cookie) on first use."""
    if "csrf" in g:
        cached: str = g.csrf
        return cached
    token = request.cookies.get(CSRF_COOKIE, "")
    if not 32 <= len(token) <= 64:
        token = secrets.token_urlsafe(32)
        _set_cookie(CSRF_COOKIE, token, max_age=YEAR)
    g.csrf = token
    return token


def check_csrf() -> None:
    """A 400 unless the form's hidden token matches the cookie (``before_request``, POST)."""
    if request.method != "POST":
        return
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = request.form.get(CSRF_FIELD, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), given.encode()):
        raise ApiError(
            400,
            "csrf_failed",
            "the form is out of date or was sent from another site; reload the page and try again",
            CSRF_FIELD,
        )


def current_cart(session: Session) -> Cart | None:
    """The cart of the ``cart_id`` cookie, None without one (or when it is gone)."""
    cart_id = request.cookies.get(CART_COOKIE, "")
    if not cart_id:
        return None
    try:
        return carts.get_cart(session, cart_id)
    except ApiError:
        return None


def cart_for_adding(session: Session) -> Cart:
    """The visitor's cart, made (and its cookie set) on the first add."""
    cart = current_cart(session)
    if cart is None:
        cart = carts.create_cart(session, current_customer(required=False))
        _set_cookie(CART_COOKIE, cart.id, max_age=CART_LIFETIME, only_on_success=True)
    return cart


def forget_cart() -> None:
    """Drop the cart cookie, e.g. once the cart became an order."""
    _delete_cookie(CART_COOKIE)


def form_str(name: str, *, max_len: int = MAX_TEXT, min_len: int = 0, label: str = "") -> str:
    """A trimmed form field, or a 400 naming it."""
    value = request.form.get(name, "").strip()
    what = label or name
    if len(value) < min_len:
        message = f"{what} is required" if min_len == 1 else f"{what} is too short"
        raise ApiError(400, "missing_field" if not value else "invalid_value", message, name)
    if len(value) > max_len:
        raise ApiError(400, "invalid_value", f"{what} must be at most {max_len} characters", name)
    return value


def form_int(name: str, *, minimum: int, maximum: int) -> int:
    """An integer form field within bounds, or a 400 naming it."""
    raw = request.form.get(name, "").strip()
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_type", f"'{name}' must be a whole number", name) from None
    if not minimum <= value <= maximum:
        raise ApiError(
            400, "out_of_range", f"'{name}' must be between {minimum} and {maximum}", name
        )
    return value


def url_with(**changes: Any) -> str:
    """The current page's URL with ``changes`` to its query string (None drops a key).

    A page rendered by a POST (a form shown again with an error) links to its
    GET address, given to ``render`` as ``path``.
    """
    page_path: str | None = g.get("page_path")
    path = page_path or request.path
    args: dict[str, Any] = dict(request.args.items()) if page_path is None else {}
    for key, value in changes.items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = value
    query = urlencode(args)
    return f"{path}?{query}" if query else path


def money(amount: Decimal | str, currency: str) -> str:
    """``1,074.96 PLN``: always two decimals and the ISO code, so currencies never mix up."""
    return f"{Decimal(amount):,.2f} {currency}"


def stars(rating: float | None) -> str:
    """``★★★★☆`` for a rating of 3.5 to 4.4; empty without reviews."""
    if rating is None:
        return ""
    full = int(Decimal(str(rating)).quantize(Decimal("1"), rounding=ROUND_HALF_UP))
    return "★" * full + "☆" * (5 - full)


def gateway_label(name: str) -> str:
    return GATEWAY_LABELS.get(name, name.capitalize())


def short_time(iso: str | None) -> str:
    """``2025-03-01 14:05 UTC`` from an ISO 8601 time in UTC."""
    if not iso:
        return ""
    return f"{iso[:10]} {iso[11:16]} UTC"


def cart_size(session: Session) -> int:
    """How many items the visitor's cart holds (0 without one)."""
    cart = current_cart(session)
    return sum(item.quantity for item in cart.items) if cart is not None else 0


def render(
    template: str, status: int = 200, *, path: str | None = None, **context: Any
) -> tuple[str, int]:
    """Render a page with what the layout needs: preferences, switches, cart size, CSRF.

    ``path`` is the page's GET address when a POST renders it.
    """
    if path is not None:
        g.page_path = path
    prefs = preferences()
    common: Mapping[str, Any] = {
        "lang": prefs.lang,
        "currency": prefs.currency,
        "languages": LANGUAGE_LABELS,
        "currencies": list(ctx().currencies.rates),
        "csrf_token": csrf_token(),
        "csrf_field": CSRF_FIELD,
        "cart_size": cart_size(db()),
        "customer": current_customer(required=False),
        "url_with": url_with,
        "money": money,
        "short_time": short_time,
        "stars": stars,
        "gateway_label": gateway_label,
        "localised": catalog.localised,
    }
    return render_template(template, **common, **context), status
