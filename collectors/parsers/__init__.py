"""Line parsers by name: which parser reads a tailed file (``collect.files``).

Every parser has the contract of :func:`collectors.ecs.parse_line`: the bytes
of one line (no newline) → an :class:`~siem.model.Event` whose id hashes
``source`` and ``position``, or :class:`~collectors.errors.LineError` when the
line cannot be read (the tailer then stores it as an error event with the raw
line). ``ecs`` (the shop's own JSON lines) is the default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from collectors import ecs
from collectors.parsers import haproxy, nginx
from siem.model import Event
from vigil.errors import ConfigError


class Parser(Protocol):
    """Parse one line read at ``source``/``position`` (byte ``offset``) at time ``now``."""

    def __call__(
        self, raw: bytes, *, source: str, position: int | str, offset: int, now: float
    ) -> Event: ...


DEFAULT = "ecs"
PARSERS: dict[str, Callable[..., Event]] = {
    "ecs": ecs.parse_line,
    "haproxy": haproxy.parse_line,
    "nginx": nginx.parse_access_line,
    "nginx_error": nginx.parse_error_line,
}


def get_parser(name: str, *, key: str = "collect.files") -> Parser:
    """The parser called ``name``; a :class:`ConfigError` naming it and the known ones if none."""
    try:
        parser: Parser = PARSERS[name]
    except KeyError:
        known = ", ".join(sorted(PARSERS))
        raise ConfigError(f"{key}: unknown parser {name!r}; known parsers: {known}") from None
    return parser
