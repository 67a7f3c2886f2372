"""The alerting package's checks of the settings, run whenever settings are loaded.

``vigil/settings.py`` depends on no subsystem (see ``collectors/config.py``):
the ``alert.email`` section is checked here with the e-mail receiver's own
parser, and importing the ``alerting`` package registers the check with
:func:`vigil.settings.add_check` (``vigil alert`` and ``vigil config check``
import it). An error names the file and the key's line.
"""

from __future__ import annotations

from vigil.errors import ConfigError
from vigil.settings import Fail, Settings


def check_settings(settings: Settings, fail: Fail) -> None:
    """``fail`` on an ``alert.email`` section the e-mail receiver cannot use."""
    if not settings.alert.email.to:
        return
    from alerting.notify.email import config_from_settings

    try:
        config_from_settings(settings.alert.email)
    except ConfigError as exc:
        key, _, reason = exc.reason.partition(": ")
        if not key.startswith("alert.email") or not reason:
            key, reason = "alert.email", exc.reason
        fail(key, reason)
