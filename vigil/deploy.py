"""Rolling deploys of the shop: one instance at a time, drained in haproxy first.

``vigil deploy --release v2`` and the playbooks' ``deploy``/``rollback``
actions call ``roll_out``. It talks to the ``vigil up`` supervisor's control
API and to haproxy's runtime API, and records a ``vigil.deploy`` event (who,
when, release before and after) in the store, so dashboards can draw deploy
markers and a rollback knows where to go back to.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siem.model import Event, EventQuery, Store
from vigil.auth import AuthError, audit_event, cli_token, control_token_path, read_secret_file
from vigil.errors import VigilError
from vigil.haproxy import HaproxyAdmin, HaproxyError
from vigil.settings import Settings

DRAIN_WAIT = 10.0
UP_WAIT = 30.0


class DeployError(VigilError):
    """A deploy step failed; the message says which instance and why."""


@dataclass(frozen=True)
class DeployStep:
    instance: str
    release_before: str
    release_after: str
    seconds: float


@dataclass(frozen=True)
class DeployResult:
    release_before: str
    release_after: str
    steps: list[DeployStep] = field(default_factory=list)


def control_token(settings: Settings) -> str:
    """The token for the supervisor's control API: ``$VIGIL_TOKEN`` (a user API token,
    role operator for changes), else ``$VIGIL_TOKEN_FILE``, else the 0600 file
    ``vigil up`` wrote to ``data/run/control.token``."""
    path = control_token_path(settings)
    try:
        token = cli_token()
        if token:
            return token
        if not path.exists():
            # vigil up writes it on start: without it there is no supervisor to talk to.
            raise DeployError(
                f"cannot reach the vigil up supervisor: no control token at {path}; "
                "is `vigil up` running? (it writes one into its data dir)"
            )
        return read_secret_file(path)
    except AuthError as exc:
        raise DeployError(f"no token for the supervisor's control API: {exc}") from None


def _control(
    settings: Settings, path: str, body: dict[str, Any] | None = None, timeout: float = 90.0
) -> Any:
    url = f"http://127.0.0.1:{settings.up.control_port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method="POST" if body is not None else "GET",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {control_token(settings)}",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:300]
        raise DeployError(f"supervisor refused {path}: {err.code} {detail}") from None
    except OSError as exc:
        raise DeployError(
            f"cannot reach the vigil up supervisor on {url} ({exc}); is `vigil up` running?"
        ) from None


def current_releases(settings: Settings) -> dict[str, str]:
    """Release per shop instance, as the supervisor runs them."""
    data = _control(settings, "/api/instances")
    return {i["name"]: i["release"] for i in data["instances"]}


def previous_release(store: Store) -> str | None:
    """The release before the last successful forward deploy; rollbacks do not count.

    So running a rollback twice does not roll forward again, and a deploy that
    started on mixed releases ("v1/v2") gives no single answer.
    """
    query = EventQuery(
        dataset="vigil.deploy",
        limit=1,
        equals=(("event.action", "deploy"), ("event.outcome", "success")),
    )
    events = store.search(query)
    before = events[0].get("labels.release_before") if events else None
    return str(before) if before and "/" not in str(before) else None


def deploy_event(
    *,
    actor: str,
    before: str,
    after: str,
    instances: list[str],
    outcome: str,
    started: float,
    ended: float,
    action: str = "deploy",
) -> Event:
    """The ``vigil.deploy`` event of one rollout."""
    doc = {
        "@timestamp": dt.datetime.fromtimestamp(ended, dt.UTC).isoformat().replace("+00:00", "Z"),
        "message": f"{actor} {action}: {after} (was {before}) on {', '.join(instances)}",
        "event": {
            "dataset": "vigil.deploy",
            "kind": "event",
            "category": ["configuration"],
            "action": action,
            "outcome": outcome,
            "duration": int((ended - started) * 1e9),
        },
        "user": {"name": actor},
        "service": {"name": "shop"},
        "labels": {
            "release_before": before,
            "release_after": after,
            "instances": ",".join(instances),
        },
    }
    return Event.from_doc(doc, source="vigil.deploy", position=uuid.uuid4().hex)


def roll_out(
    settings: Settings,
    release: str,
    *,
    actor: str,
    store: Store,
    on_step: Callable[[DeployStep], None] | None = None,
    admin: HaproxyAdmin | None = None,
    action: str = "deploy",
) -> DeployResult:
    """Move every shop instance to ``release``, one at a time, and record it.

    ``action`` is ``deploy`` or ``rollback``: only deploys count for ``previous_release``.
    """
    started = time.time()
    releases = current_releases(settings)
    if not releases:
        raise DeployError("the supervisor runs no shop instance")
    befores = sorted(set(releases.values()))
    before = befores[0] if len(befores) == 1 else "/".join(befores)
    admin = admin or HaproxyAdmin(Path(settings.data_dir).resolve() / "run" / "haproxy.sock")
    use_haproxy = admin.available()
    steps: list[DeployStep] = []
    outcome = "failure"
    try:
        for name, current in sorted(releases.items()):
            t0 = time.monotonic()
            if current != release:
                if use_haproxy:
                    _drain(admin, name)
                _control(settings, f"/api/instances/{name}/release", {"release": release})
                if use_haproxy:
                    admin.set_state(name, "ready")
                    _wait_up(admin, name)
            step = DeployStep(name, current, release, time.monotonic() - t0)
            steps.append(step)
            if on_step is not None:
                on_step(step)
        outcome = "success"
    finally:
        ended = time.time()
        store.write(
            events=[
                deploy_event(
                    actor=actor,
                    before=before,
                    after=release,
                    instances=sorted(releases),
                    outcome=outcome,
                    started=started,
                    ended=ended,
                    action=action,
                ),
                audit_event(
                    action,
                    actor=actor,
                    outcome=outcome,
                    category="configuration",
                    message=f"{actor} {action}: {release} (was {before})",
                    labels={"release_before": before, "release_after": release},
                    at=ended,
                ),
            ]
        )
    return DeployResult(before, release, steps)


def _wait_up(admin: HaproxyAdmin, name: str, timeout: float = UP_WAIT) -> None:
    """Wait until haproxy's health check sees ``name`` UP again, before draining the next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if admin.states().get(name) == "UP":
            return
        time.sleep(0.1)
    raise DeployError(f"haproxy does not see {name} UP after {timeout:.0f} s; check its /readyz")


def _drain(admin: HaproxyAdmin, name: str) -> None:
    """Stop new requests to ``name`` and give in-flight ones up to DRAIN_WAIT seconds."""
    try:
        admin.set_state(name, "drain")
        deadline = time.monotonic() + DRAIN_WAIT
        while admin.sessions(name) > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
    except HaproxyError as exc:
        raise DeployError(f"could not drain {name} in haproxy: {exc}") from exc
