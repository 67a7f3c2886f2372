"""Collectors: sources (Prometheus scraper, log tailer) → ECS parsing → sink → ``siem.Store``.

``vigil collect`` runs :class:`collectors.loop.Collector` every ``collect.interval_s``.
"""
