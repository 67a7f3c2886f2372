"""The Alertmanager configuration as its API shows it: secrets replaced by ``<secret>``.

Alertmanager's ``/api/v2/status`` answers ``config.original`` with the loaded
configuration marshalled again, where every ``Secret`` and ``SecretURL`` field
(passwords, API keys, tokens, Slack's ``api_url``) and the secrets of Prometheus'
``http_config`` read ``<secret>``. Vigil does the same, so a ``viewer`` token
(Grafana, ``amtool config show``) never reads a password written in the file.
Alertmanager's own parsers accept ``<secret>`` back for these fields, which is
how ``amtool config routes`` and Grafana's data source read the answer.

Webhook ``url`` stays readable, as in Alertmanager 0.25 (the ``amtool`` Vigil is
tested with cannot read ``<secret>`` there); a URL carrying a token belongs in
``url_file``. Example::

    redacted_text("global:\\n  smtp_auth_password: hunter2\\n")
    # 'global:\\n  smtp_auth_password: <secret>\\n'
"""

from __future__ import annotations

import functools
from typing import Any

import yaml

SECRET = "<secret>"
SECRET_KEYS = frozenset(
    (
        # global
        "smtp_auth_password",
        "smtp_auth_secret",
        "slack_api_url",
        "slack_app_token",
        "opsgenie_api_key",
        "victorops_api_key",
        "wechat_api_secret",
        "telegram_bot_token",
        "rocketchat_token",
        "rocketchat_token_id",
        "mattermost_webhook_url",
        # integrations
        "auth_password",
        "auth_secret",
        "api_key",
        "api_secret",
        "app_token",
        "bot_token",
        "routing_key",
        "service_key",
        "token",
        "token_id",
        "user_key",
        "webhook_url",
        "alert_source_token",
        # Prometheus' http_config (basic_auth, authorization, oauth2, sigv4)
        "password",
        "credentials",
        "bearer_token",
        "client_secret",
        "secret_key",
    )
)
"""Keys whose values are ``Secret``/``SecretURL`` in Alertmanager (0.25 to 0.34) and in
``prometheus/common``'s HTTP client configuration."""
SLACK_SECRET_KEYS = frozenset(("api_url",))
"""Secret only inside ``slack_configs`` (elsewhere ``api_url`` is a plain URL)."""


@functools.lru_cache(maxsize=4)  # Grafana polls the status; the text rarely changes
def redacted_text(text: str) -> str:
    """``text`` (an Alertmanager configuration already loaded by Vigil) written again with
    every secret value replaced by ``<secret>``; comments are lost, as in Alertmanager."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        return text
    # Non-ASCII is written escaped: PyYAML writes some characters raw (NEL, U+0085)
    # that it then reads back as a line break.
    return yaml.safe_dump(_redact(data, ""), sort_keys=False, allow_unicode=False)


def _redact(node: Any, parent: str) -> Any:
    if isinstance(node, list):
        return [_redact(item, parent) for item in node]
    if not isinstance(node, dict):
        return node
    rv: dict[Any, Any] = {}
    for key, value in node.items():
        secret = key in SECRET_KEYS or (parent == "slack_configs" and key in SLACK_SECRET_KEYS)
        if secret and isinstance(value, str) and value:
            rv[key] = SECRET
        else:
            rv[key] = _redact(value, key if isinstance(key, str) else parent)
    return rv
