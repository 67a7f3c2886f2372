"""Alerting: PromQL and event rules, alert state, notifications.

Importing the package registers its checks of the settings (``alerting/config.py``).
"""

from alerting.config import check_settings
from vigil.settings import add_check

add_check(check_settings)
