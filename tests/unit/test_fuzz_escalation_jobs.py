"""A saved escalation step (a row of ``am_escalations`` in ``alerts.db``) takes any text:
a job with well-typed fields or a ``NotifyError``, nothing else, so a damaged file never
stops ``vigil alert`` from starting."""

from __future__ import annotations

import json
from typing import Any

from fuzz_inputs import FUZZ, hostile_files
from hypothesis import given
from hypothesis import strategies as st

from alerting.am.config import EscalationStep
from alerting.am.dispatch import EscalationJob
from alerting.notify.base import GroupNotification, NotifyError
from alerting.state import Alert

ALERT = Alert("f1", {"alertname": "X"}, {"summary": "x"}, "firing", 1.0, 10.0, fired_at=10.0)
VALID = EscalationJob(
    GroupNotification("team", '{}:{alertname="X"}', {"alertname": "X"}, [ALERT], {"ts": "1.2"}),
    EscalationStep(300.0, slack_mention="<!subteam^S1>"),
    "step 1: after 300s: <!subteam^S1>",
    attempts=2,
    error="server_error",
).to_json()
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


def check(text: str) -> None:
    try:
        job = EscalationJob.from_json(text)
    except NotifyError as exc:
        assert str(exc).startswith("not an escalation step: ")
        return
    # Whatever loaded is a job again after a save (every field of the type it claims).
    again = EscalationJob.from_json(job.to_json())
    assert again.to_json() == job.to_json()
    assert isinstance(job.text, str) and isinstance(job.attempts, int)
    alerts = again.notification.alerts
    assert all(isinstance(a, Alert) and isinstance(a.fingerprint, str) for a in alerts)


def test_saved_step_round_trips() -> None:
    job = EscalationJob.from_json(VALID)
    assert job.to_json() == VALID
    assert job.notification.alerts == [ALERT] and job.attempts == 2


@FUZZ
@given(hostile_files(VALID.encode()))
def test_fuzz_saved_step_any_text_loads_or_raises_notify_error(data: bytes) -> None:
    check(data.decode("utf-8", "replace"))


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON document, nested ones included."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    rv = []
    for key, value in items:
        rv.append((node, key))
        if isinstance(value, dict | list):
            rv.extend(_slots(value))
    return rv


@FUZZ
@given(st.data())
def test_fuzz_saved_step_with_any_field_replaced_loads_or_raises_notify_error(
    data: st.DataObject,
) -> None:
    doc = json.loads(VALID)
    container, key = data.draw(st.sampled_from(_slots(doc)))
    container[key] = data.draw(JSON)
    check(json.dumps(doc))
