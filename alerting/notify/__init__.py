"""Notifiers: where alerts go (Slack, webhooks). Each implements ``Notifier``."""
