"""A real SMTP server for tests (aiosmtpd) that keeps every message it accepts, with an
authenticator for one user (``vigil`` / ``PASSWORD``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import free_port

PASSWORD = "s3cr3t-Pa55word-do-not-log"


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage


class Inbox:
    """aiosmtpd handler keeping every message, and an authenticator for one user."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.logins: list[tuple[str, str, str]] = []  # (mechanism, login, password)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((mechanism, login, password))
        return AuthResult(success=login == "vigil" and password == PASSWORD, handled=False)


@contextmanager
def smtp_server(
    host: str = "127.0.0.1", port: int | None = None, **params: Any
) -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    if "authenticator" in params:
        params["authenticator"] = inbox.authenticate
    controller = Controller(inbox, hostname=host, port=port or free_port(), **params)
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()
