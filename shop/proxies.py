"""The request's scheme from a trusted proxy's ``X-Forwarded-Proto``.

Behind a proxy that terminates TLS, the shop sees plain HTTP and would send
its cookies without ``Secure``. The proxy says what the client used in
``X-Forwarded-Proto``; that header is believed only when the peer is one of
``shop.trusted_proxies`` (default loopback, where ``vigil up``'s haproxy
runs), since anyone else could send it too.

Like werkzeug's ``ProxyFix(x_proto=1)`` — the last value, the one the nearest
proxy set — but only for trusted peers, and only ``http`` or ``https``:
``wsgi.url_scheme`` ends up in absolute URLs, where another scheme has no place.

Example::

    app.wsgi_app = ForwardedProto(app.wsgi_app, ["127.0.0.1", "::1"])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SCHEMES = ("http", "https")


class ForwardedProto:
    """WSGI middleware setting ``wsgi.url_scheme`` from a trusted proxy's header."""

    def __init__(self, wsgi_app: WSGIApplication, trusted: Iterable[str]) -> None:
        self.wsgi_app = wsgi_app
        self.trusted = frozenset(trusted)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        header = environ.get("HTTP_X_FORWARDED_PROTO", "")
        if header and environ.get("REMOTE_ADDR", "") in self.trusted:
            scheme = header.rsplit(",", 1)[-1].strip().lower()
            if scheme in SCHEMES:
                environ["wsgi.url_scheme"] = scheme
        rv: Iterable[bytes] = self.wsgi_app(environ, start_response)
        return rv
