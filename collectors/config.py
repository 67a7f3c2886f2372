"""The collectors' checks of the settings, run whenever settings are loaded.

``vigil/settings.py`` depends on no subsystem: it checks types and ranges.
That each parser named in ``collect.files`` exists, and that
``collect.postgresql_log_line_prefix`` can be read, takes the parsers: these
checks live here, and importing the ``collectors`` package registers them with
:func:`vigil.settings.add_check` (``vigil collect``, ``vigil up`` and
``vigil config check`` all import it). An error names the file and the key's
line, e.g. ``vigil.yaml:14: collect.files.run/pg.log: unknown parser 'pg'…``.
"""

from __future__ import annotations

from collectors.parsers import get_parser
from vigil.errors import ConfigError
from vigil.settings import Fail, Settings


def check_settings(settings: Settings, fail: Fail) -> None:
    """``fail`` on an unknown parser name or an unreadable ``log_line_prefix``."""
    prefix = settings.collect.postgresql_log_line_prefix
    key = "collect.postgresql_log_line_prefix"
    try:  # a bad log_line_prefix is a mistake even before a file uses it
        get_parser("postgresql_stderr", key=key, postgresql_prefix=prefix)
    except ConfigError as exc:
        fail(key, exc.reason.removeprefix(f"{key}: "))
    for pattern, parser in settings.collect.files.items():
        key = f"collect.files.{pattern}"
        try:
            get_parser(parser, key=key, postgresql_prefix=prefix)
        except ConfigError as exc:
            fail(key, exc.reason.removeprefix(f"{key}: "))
