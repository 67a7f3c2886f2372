"""The shop's HTML pages: catalogue, product, cart, checkout and order tracking.

Server-rendered, no JavaScript needed. The pages hold no business logic: they
read forms, call the same services as the JSON API (``shop.catalog``,
``shop.carts``, ``shop.checkout``, ``shop.orders``) and render what those
return. A service's ``ApiError`` on a form re-renders the form with the
message and the service's status; every other error is the app's error page.
Every POST changes something and answers with a 303 to a page (post/redirect/get).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, request
from werkzeug.wrappers import Response

from shop import accounts, carts, catalog, checkout, metrics, orders
from shop.context import client_ip, ctx, current_customer, db
from shop.models import Cart, Product
from shop.throttle import Throttled
from shop.validation import MAX_QUANTITY, ApiError, query_int
from shop.web import view
from shop.web.view import render

bp = Blueprint("pages", __name__)
bp.before_request(view.check_csrf)
bp.after_request(view.write_cookies)

PER_PAGE = 20
MAX_PAGE = 10000
# The happy path of an order, drawn as a progress bar on the tracking page.
PROGRESS = ("placed", "paid", "shipped", "delivered")
SHIPPING_LABELS = {
    "name": "Full name",
    "address": "Street and number",
    "city": "City",
    "postcode": "Postcode",
    "country": "Country",
}
# Echoed back into the form after an error; the card number and CVC never are.
_ECHOED = ("email", "gateway", "expiry", "holder", *(f"ship_{k}" for k in SHIPPING_LABELS))


def _see_other(location: str) -> Response:
    return redirect(location, code=303)


@bp.get("/")
def catalogue() -> Any:
    """Search, filter by category and page through the products."""
    prefs = view.preferences()
    page = query_int("page", default=1, minimum=1, maximum=MAX_PAGE)
    q = request.args.get("q", "").strip()
    category = request.args.get("category", "").strip()
    sort = request.args.get("sort") or None
    items, total = catalog.list_products(
        db(),
        q=q,
        category=category or None,
        page=page,
        per_page=PER_PAGE,
        sort=sort,
        lang=prefs.lang,
    )
    currencies = ctx().currencies
    return render(
        "catalogue.html",
        products=[catalog.product_json(p, prefs.lang, prefs.currency, currencies) for p in items],
        categories=[
            (c.slug, catalog.localised(c.names, prefs.lang)) for c in catalog.list_categories(db())
        ],
        q=q,
        category=category,
        sort=sort or "",
        sorts=catalog.SORTS,
        page=page,
        pages=catalog.page_count(total, PER_PAGE),
        total=total,
    )


def _product_page(product: Product, *, error: str | None = None, status: int = 200) -> Any:
    prefs = view.preferences()
    detail = catalog.product_detail_json(product, prefs.lang, prefs.currency, ctx().currencies)
    return render(
        "product.html",
        status,
        path=f"/products/{product.id}",
        product=detail,
        category_name=catalog.localised(product.category.names, prefs.lang),
        max_quantity=max(1, min(product.stock, MAX_QUANTITY)),
        error=error,
    )


@bp.get("/products/<int:product_id>")
def product_page(product_id: int) -> Any:
    """One product: picture, description, price, stock, reviews and "Add to cart"."""
    return _product_page(catalog.get_product(db(), product_id))


@bp.post("/cart/add")
def add_to_cart() -> Any:
    """Add ``product_id`` × ``quantity`` to the cart (made on first use), then show the cart."""
    product_id = view.form_int("product_id", minimum=1, maximum=catalog.MAX_ID)
    product = catalog.get_product(db(), product_id)
    try:
        quantity = view.form_int("quantity", minimum=1, maximum=MAX_QUANTITY)
        cart = view.cart_for_adding(db())
        carts.add_item(db(), cart, product.id, quantity)
    except ApiError as err:
        return _product_page(product, error=err.message, status=err.status)
    return _see_other("/cart")


def _cart_page(
    cart: Cart | None,
    *,
    error: str | None = None,
    coupon_error: str | None = None,
    status: int = 200,
) -> Any:
    prefs = view.preferences()
    quote = None
    stale_coupon = None
    if cart is not None and cart.items:
        quote, stale_coupon = carts.cart_quote(
            db(), cart, prefs.currency, current_customer(required=False), ctx().settings
        )
    return render(
        "cart.html",
        status,
        path="/cart",
        cart=cart,
        quote=quote,
        error=error,
        coupon_error=coupon_error or stale_coupon,
        coupon_code=cart.coupon_code if cart is not None else None,
    )


@bp.get("/cart")
def cart_page() -> Any:
    """The cart's lines, coupon and totals in the chosen currency."""
    return _cart_page(view.current_cart(db()))


@bp.post("/cart/items/<int:product_id>")
def update_item(product_id: int) -> Any:
    """Set a line's quantity (0 removes it)."""
    cart = view.current_cart(db())
    try:
        if cart is None:
            raise ApiError(404, "not_found", "your cart has expired; add the product again")
        quantity = view.form_int("quantity", minimum=0, maximum=MAX_QUANTITY)
        carts.set_quantity(db(), cart, product_id, quantity)
    except ApiError as err:
        return _cart_page(cart, error=err.message, status=err.status)
    return _see_other("/cart")


@bp.post("/cart/items/<int:product_id>/remove")
def remove_item(product_id: int) -> Any:
    """Take a line out of the cart."""
    cart = view.current_cart(db())
    if cart is not None:
        carts.set_quantity(db(), cart, product_id, 0)
    return _see_other("/cart")


@bp.post("/cart/coupon")
def apply_coupon() -> Any:
    """Put a coupon on the cart; an unknown, expired or unmet one is explained in place."""
    cart = view.current_cart(db())
    try:
        if cart is None or not cart.items:
            raise ApiError(
                400, "empty_cart", "add something to the cart before applying a coupon", "code"
            )
        code = view.form_str("code", min_len=1, max_len=carts.MAX_CODE_LEN, label="the code")
        carts.apply_coupon(db(), cart, code)
    except ApiError as err:
        return _cart_page(cart, coupon_error=err.message, status=err.status)
    return _see_other("/cart")


@bp.post("/cart/coupon/remove")
def remove_coupon() -> Any:
    """Take the coupon off the cart."""
    cart = view.current_cart(db())
    if cart is not None:
        carts.remove_coupon(cart)
    return _see_other("/cart")


def _checkout_page(
    cart: Cart,
    *,
    form: dict[str, str],
    error: str | None = None,
    error_field: str | None = None,
    status: int = 200,
) -> Any:
    prefs = view.preferences()
    quote, stale_coupon = carts.cart_quote(
        db(), cart, prefs.currency, current_customer(required=False), ctx().settings
    )
    gateways = ctx().gateways
    return render(
        "checkout.html",
        status,
        path="/checkout",
        quote=quote,
        coupon_error=stale_coupon,
        gateways=gateways,
        form=form,
        selected_gateway=form.get("gateway") or gateways[0],
        error=error,
        error_field=error_field,
        shipping_fields=SHIPPING_LABELS,
    )


def _shipping() -> dict[str, str]:
    """The shipping address; the page asks for all of it (the API allows it partial)."""
    try:
        return {
            key: view.form_str(
                f"ship_{key}",
                min_len=1,
                max_len=checkout.MAX_SHIPPING,
                label=f"the shipping {label.lower()}",
            )
            for key, label in SHIPPING_LABELS.items()
        }
    except ApiError:
        metrics.CHECKOUTS.labels("invalid").inc()
        raise


@bp.get("/checkout")
def checkout_page() -> Any:
    """The checkout form and the order summary; an empty cart sends the visitor back."""
    cart = view.current_cart(db())
    if cart is None or not cart.items:
        return _see_other("/cart")
    customer = current_customer(required=False)
    return _checkout_page(cart, form={"email": customer.email if customer else ""})


@bp.post("/checkout")
def place_order() -> Any:
    """Pay and place the order, then show it; a failure re-renders the form and says why."""
    cart = view.current_cart(db())
    if cart is None or not cart.items:
        return _see_other("/cart")
    form = {name: request.form.get(name, "").strip()[:200] for name in _ECHOED}
    prefs = view.preferences()
    try:
        shipping = _shipping()
        result = checkout.checkout(
            db(),
            ctx(),
            cart=cart,
            email=request.form.get("email", ""),
            currency=prefs.currency,
            gateway=request.form.get("gateway", ""),
            card={
                "number": request.form.get("card_number", ""),
                "expiry": request.form.get("expiry", ""),
                "cvc": request.form.get("cvc", ""),
                "holder": request.form.get("holder", "").strip() or None,
            },
            shipping=shipping,
            customer=current_customer(required=False),
            client_ip=client_ip(),
            base_url=request.host_url,
        )
        if result.error is not None:
            # The cancelled order is already committed; the form is shown again.
            raise result.error
    except ApiError as err:
        return _checkout_page(
            cart, form=form, error=err.message, error_field=err.field, status=err.status
        )
    return _see_other(f"/orders/{result.order.public_id}")


@bp.get("/orders/<public_id>")
def order_page(public_id: str) -> Any:
    """Order tracking: status, progress, items, totals and the history."""
    order = orders.find_order(db(), public_id)
    statuses = [event.to_status for event in order.history]
    reached = {s for s in statuses if s in PROGRESS}
    return render(
        "order.html",
        order=orders.order_json(order),
        steps=[(step, step in reached) for step in PROGRESS],
        final=order.status if order.status in ("cancelled", "refunded") else None,
    )


def _next_url() -> str:
    # Only local paths: an open redirect would let a phishing link borrow the shop's name.
    target = request.values.get("next", "")
    return target if target.startswith("/") and not target.startswith("//") else "/"


@bp.get("/login")
def login_page() -> Any:
    """The login form; ``?next=`` is where a successful login goes."""
    return render("login.html", next_url=_next_url(), email="")


@bp.post("/login")
def login() -> Any:
    """Log in with e-mail and password; the token goes into the ``shop_token`` cookie."""
    email = request.form.get("email", "").strip()[: accounts.MAX_EMAIL]
    password = request.form.get("password", "")[: accounts.MAX_PASSWORD + 1]
    try:
        token = accounts.login(
            db(),
            email,
            password,
            logs=ctx().logs,
            source_ip=client_ip(),
            user_agent=request.headers.get("User-Agent", ""),
            throttle=ctx().throttle,
        )
    except Throttled as err:
        page, status = render(
            "login.html", 429, path="/login", next_url=_next_url(), email=email, error=err.message
        )
        return page, status, err.headers
    if token is None:
        return render(
            "login.html",
            401,
            path="/login",
            next_url=_next_url(),
            email=email,
            error=accounts.LOGIN_FAILED,
        )
    view.remember_login(token.token)
    return _see_other(_next_url())


@bp.get("/register")
def register_page() -> Any:
    """The registration form."""
    return render("register.html", next_url=_next_url(), form={})


@bp.post("/register")
def register() -> Any:
    """Create an account and log it in."""
    form = {
        "email": request.form.get("email", "").strip()[: accounts.MAX_EMAIL + 1],
        "name": request.form.get("name", "").strip()[: accounts.MAX_NAME + 1],
    }
    password = request.form.get("password", "")[: accounts.MAX_PASSWORD + 1]
    try:
        accounts.register(db(), form["email"], password, form["name"])
    except ApiError as err:
        return render(
            "register.html",
            err.status,
            path="/register",
            next_url=_next_url(),
            form=form,
            error=err.message,
            error_field=err.field,
        )
    # Not throttled: the password was set a moment ago, nothing is being guessed.
    token = accounts.login(
        db(),
        form["email"],
        password,
        logs=ctx().logs,
        source_ip=client_ip(),
        user_agent=request.headers.get("User-Agent", ""),
    )
    assert token is not None  # just registered with this very password
    view.remember_login(token.token)
    return _see_other(_next_url())


@bp.post("/logout")
def logout() -> Any:
    """Revoke the browser's token and drop the cookie."""
    token = request.cookies.get(view.TOKEN_COOKIE, "")
    if token:
        accounts.logout(db(), token)
    view.forget_login()
    # A logged-in visitor's cart belongs to the account; anonymous, it could not be paid.
    view.forget_cart()
    return _see_other("/")
