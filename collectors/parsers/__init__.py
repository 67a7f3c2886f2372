"""Line parsers by name: which parser reads a tailed file (``collect.files``).

Every parser has the contract of :func:`collectors.ecs.parse_line`: the bytes
of one line (no newline) → an :class:`~siem.model.Event` whose id hashes
``source`` and ``position``, or :class:`~collectors.errors.LineError` when the
line cannot be read (the tailer then stores it as an error event with the raw
line). ``ecs`` (the shop's own JSON lines) is the default.

A parser whose events span lines is a :class:`~collectors.multiline.Grouped`
(``postgresql_stderr``, ``python``): the tailer hands it a group's lines
joined by ``\\n``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from collectors import ecs
from collectors.parsers import haproxy, nginx, postgresql, python
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
    "postgresql": postgresql.parse_json_line,
    "postgresql_stderr": postgresql.stderr_parser(),
    "python": python.PARSER,
}


def get_parser(
    name: str, *, key: str = "collect.files", postgresql_prefix: str | None = None
) -> Parser:
    """The parser called ``name``; a :class:`ConfigError` naming it and the known ones if none.

    ``postgresql_prefix``: the ``log_line_prefix`` ``postgresql_stderr`` reads
    (Debian's when ``None``).
    """
    if name == "postgresql_stderr" and postgresql_prefix is not None:
        return postgresql.stderr_parser(postgresql_prefix, key=key)
    try:
        parser: Parser = PARSERS[name]
    except KeyError:
        known = ", ".join(sorted(PARSERS))
        raise ConfigError(f"{key}: unknown parser {name!r}; known parsers: {known}") from None
    return parser
