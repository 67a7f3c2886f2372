"""Collectors: sources (Prometheus scraper, log tailer) → ECS parsing → sink → ``siem.Store``.

``vigil collect`` runs :class:`collectors.loop.Collector` every ``collect.interval_s``.
Importing the package registers its checks of the settings (``collectors/config.py``).
"""

from collectors.config import check_settings
from vigil.settings import add_check

add_check(check_settings)
