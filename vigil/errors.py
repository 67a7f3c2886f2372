"""The exception root of Vigil and one subclass per subsystem."""

from __future__ import annotations


class VigilError(Exception):
    """Base class of every error Vigil raises on purpose."""


class LocatedError(VigilError):
    """An error in a file, located at ``file:line:column`` where those are known.

    The message starts with the location, e.g. ``config/vigil.yaml:12: …``;
    ``file``, ``line``, ``column`` and ``reason`` (the message without it) stay
    available to callers that render the location themselves.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.reason = message
        where = ""
        if file is not None:
            where = f"{file}: "
            if line is not None:
                where = f"{file}:{line}" + (f":{column}" if column is not None else "") + ": "
        super().__init__(where + message)


class ConfigError(LocatedError):
    """A configuration file or variable is wrong.

    The message names the file, line and key and says how to fix it, e.g.
    ``config/vigil.yaml:12: shop.port: expected an integer, got 'eighty'``.
    """
