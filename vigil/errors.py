"""The exception root of Vigil and one subclass per subsystem."""

from __future__ import annotations


class VigilError(Exception):
    """Base class of every error Vigil raises on purpose."""


class ConfigError(VigilError):
    """A configuration file or variable is wrong.

    The message names the file, line and key and says how to fix it, e.g.
    ``config/vigil.yaml:12: shop.port: expected an integer, got 'eighty'``.
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
        where = ""
        if file is not None:
            where = f"{file}: "
            if line is not None:
                where = f"{file}:{line}" + (f":{column}" if column is not None else "") + ": "
        super().__init__(where + message)
