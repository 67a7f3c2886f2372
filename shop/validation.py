"""Input validation for the JSON API: every bad input becomes a 4xx that says why.

Handlers never index request JSON directly; they go through these helpers, so
a wrong type, a missing field or an absurd number is answered with
``{"error": {"code": ..., "message": ..., "field": ...}}`` and never a 500.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import request

from vigil.errors import VigilError

MAX_QUANTITY = 1000
MAX_TEXT = 2000


class ApiError(VigilError):
    """An error answered to the client as JSON with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        # Extra response headers, e.g. Retry-After on a 429.
        self.headers: dict[str, str] = {}

    def payload(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        return {"error": err}


def not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident!s:.80} does not exist")


def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx explaining what is wrong."""
    if not request.is_json:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        # json.loads raises RecursionError, not ValueError, for "[[[[…" a few thousand deep.
        raise ApiError(400, "malformed_json", "the JSON body is nested too deeply") from None
    if data is None:
        raise ApiError(400, "malformed_json", "the request body is not valid JSON")
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the JSON body must be an object")
    check_text(data)
    return data


def clean_text(text: str) -> bool:
    """False for text no database can store: NUL characters or lone UTF-16 surrogates."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(data: dict[str, Any]) -> None:
    """A 400 naming the top-level field when any string (or key) in ``data`` is not clean."""
    # Iterative: the body may be nested nearly as deep as the recursion limit.
    stack: list[tuple[str, Any]] = [(key, key) for key in data]
    stack += [(key, value) for key, value in data.items()]
    while stack:
        field, value = stack.pop()
        if isinstance(value, dict):
            stack += [(field, item) for pair in value.items() for item in pair]
        elif isinstance(value, list):
            stack += [(field, item) for item in value]
        elif isinstance(value, str) and not clean_text(value):
            raise ApiError(
                400,
                "invalid_text",
                f"'{field:.40}' must be valid Unicode without NUL (\\u0000) characters",
                field[:40],
            )


def get_str(
    data: dict[str, Any],
    field: str,
    *,
    required: bool = True,
    max_len: int = MAX_TEXT,
    min_len: int = 0,
    default: str | None = None,
) -> str | None:
    value = data.get(field)
    if value is None:
        if required:
            raise ApiError(400, "missing_field", f"'{field}' is required", field)
        return default
    if not isinstance(value, str):
        raise ApiError(400, "invalid_type", f"'{field}' must be a string", field)
    value = value.strip()
    if len(value) < min_len:
        raise ApiError(
            400, "invalid_value", f"'{field}' must be at least {min_len} characters", field
        )
    if len(value) > max_len:
        raise ApiError(
            400, "invalid_value", f"'{field}' must be at most {max_len} characters", field
        )
    return value


def require_str(data: dict[str, Any], field: str, **kwargs: Any) -> str:
    value = get_str(data, field, required=True, **kwargs)
    assert value is not None
    return value


def get_int(
    data: dict[str, Any],
    field: str,
    *,
    minimum: int,
    maximum: int,
    required: bool = True,
    default: int | None = None,
) -> int | None:
    value = data.get(field)
    if value is None:
        if required:
            raise ApiError(400, "missing_field", f"'{field}' is required", field)
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid_type", f"'{field}' must be an integer", field)
    if not minimum <= value <= maximum:
        raise ApiError(
            400, "out_of_range", f"'{field}' must be between {minimum} and {maximum}", field
        )
    return value


def require_int(data: dict[str, Any], field: str, *, minimum: int, maximum: int) -> int:
    value = get_int(data, field, minimum=minimum, maximum=maximum, required=True)
    assert value is not None
    return value


def get_bool(data: dict[str, Any], field: str, default: bool | None = None) -> bool | None:
    value = data.get(field, default)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, "invalid_type", f"'{field}' must be true or false", field)
    return value


def get_decimal(
    data: dict[str, Any], field: str, *, minimum: Decimal, maximum: Decimal, required: bool = True
) -> Decimal | None:
    """A money-like number given as a JSON number or a decimal string."""
    value = data.get(field)
    if value is None:
        if required:
            raise ApiError(400, "missing_field", f"'{field}' is required", field)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(400, "invalid_type", f"'{field}' must be a number", field)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ApiError(400, "invalid_type", f"'{field}' must be a number", field) from None
    if not number.is_finite() or not minimum <= number <= maximum:
        raise ApiError(
            400, "out_of_range", f"'{field}' must be between {minimum} and {maximum}", field
        )
    return number.quantize(Decimal("0.01"))


def query_int(name: str, *, default: int, minimum: int, maximum: int) -> int:
    """An integer query-string parameter within bounds."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_type", f"query parameter '{name}' must be an integer", name
        ) from None
    if not minimum <= value <= maximum:
        raise ApiError(
            400,
            "out_of_range",
            f"query parameter '{name}' must be between {minimum} and {maximum}",
            name,
        )
    return value
