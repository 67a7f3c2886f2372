"""A Slack-compatible Web API server for tests: ``chat.postMessage``, ``chat.update`` and
the ``response_url`` of interactive buttons (``/actions/...``).

It answers like Slack (``{"ok": true, "channel": ..., "ts": ..., "message": ...}``),
checks the bearer token, records every call, and can be told to answer the next
calls with 429 (``Retry-After``) or 5xx, or to answer every call with a 5xx
until told otherwise (``outage``). The real ``slack_sdk.WebClient`` talks
to it unchanged through ``base_url``::

    with SlackServer(token="xoxb-test") as slack:
        client = WebClient(token="xoxb-test", base_url=slack.api_url)
        client.chat_postMessage(channel="#a", text="hi")
        assert slack.calls[0].method == "chat.postMessage"
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from conftest import free_port
from flask import Flask, Response, request
from werkzeug.serving import make_server


@dataclass
class Call:
    """One API call as the server received it (failed attempts included)."""

    method: str
    payload: dict[str, Any]
    status: int


@dataclass
class SlackServer:
    """Run with ``start()``/``stop()`` or as a context manager."""

    token: str = "xoxb-test-token"
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    responses: list[dict[str, Any]] = field(default_factory=list)
    """Bodies posted to a button's ``response_url`` (ephemeral answers)."""

    def __post_init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._failures: list[tuple[int, dict[str, str], str | None]] = []
        self._outage: int | None = None
        self._ts = itertools.count(1)
        self._app = self._build()
        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def start(self) -> SlackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def __enter__(self) -> SlackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(
        self, n: int, status: int = 429, retry_after: int = 1, method: str | None = None
    ) -> None:
        """Answer the next ``n`` calls (of ``method``, or any) with ``status``; 429 carries
        ``Retry-After``."""
        headers = {"Retry-After": str(retry_after)} if status == 429 else {}
        with self._lock:
            self._failures.extend([(status, headers, method)] * n)

    def outage(self, status: int | None) -> None:
        """Answer every call with ``status`` from now on; ``None`` ends the outage."""
        with self._lock:
            self._outage = status

    def ok_calls(self, method: str) -> list[Call]:
        """Calls of ``method`` that Slack would have processed (status 200, ok)."""
        with self._lock:
            return [c for c in self.calls if c.method == method and c.status == 200]

    def _payload(self) -> dict[str, Any]:
        if request.is_json:
            return dict(request.get_json(force=True) or {})
        rv: dict[str, Any] = dict(request.form)
        for key in ("blocks", "attachments"):
            if isinstance(rv.get(key), str):
                rv[key] = json.loads(rv[key])
        return rv

    @property
    def response_url_prefix(self) -> str:
        """Where this server takes interactive answers (Slack's ``response_url``)."""
        return f"http://127.0.0.1:{self.port}/actions/"

    def _build(self) -> Flask:
        app = Flask("slack-test-server")

        @app.post("/actions/<path:hook>")
        def respond(hook: str) -> Response:
            """A ``response_url`` of a button click: the ephemeral answers are kept."""
            with self._lock:
                self.responses.append(dict(request.get_json(force=True) or {}))
            return Response("ok", 200, mimetype="text/plain")

        @app.post("/api/<method>")
        def api(method: str) -> Response:
            payload = self._payload()
            with self._lock:
                failure = next((f for f in self._failures if f[2] in (None, method)), None)
                if failure is not None:
                    self._failures.remove(failure)
                elif self._outage is not None:
                    failure = (self._outage, {}, None)
                status = failure[0] if failure else 200
                self.calls.append(Call(method, payload, status))
            if failure is not None:
                body = {"ok": False, "error": "ratelimited" if status == 429 else "server_error"}
                return Response(json.dumps(body), status, failure[1], "application/json")
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return _json({"ok": False, "error": "invalid_auth"})
            return _json(self._answer(method, payload))

        return app

    def _answer(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        channel = str(payload.get("channel", ""))
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        with self._lock:
            if method == "chat.postMessage":
                ts = f"1700000000.{next(self._ts) * 100:06d}"
                message = {"type": "message", "ts": ts, **_message_fields(payload)}
                self.messages[(channel, ts)] = message
                return {"ok": True, "channel": channel, "ts": ts, "message": message}
            if method == "chat.update":
                ts = str(payload.get("ts", ""))
                if (channel, ts) not in self.messages:
                    return {"ok": False, "error": "message_not_found"}
                self.messages[(channel, ts)].update(_message_fields(payload))
                message = self.messages[(channel, ts)]
                return {"ok": True, "channel": channel, "ts": ts, "text": message.get("text")}
        return {"ok": False, "error": "unknown_method"}


def _message_fields(payload: dict[str, Any]) -> dict[str, Any]:
    keys = ("text", "blocks", "attachments", "thread_ts")
    return {k: payload[k] for k in keys if k in payload}


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), 200, mimetype="application/json")
