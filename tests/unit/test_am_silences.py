"""Silences: states, validation, persistence across processes, and ``vigil silence``."""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from alerting.am.silences import SilenceError, SilenceStore, new_silence
from siem.model import Matcher
from vigil.cli import main


def test_states_and_expiry_keep_history(tmp_path: Path) -> None:
    store = SilenceStore(tmp_path / "alerts.db")
    later = new_silence(
        "job=shop", created_by="ana", comment="deploy", starts_at=100, duration_s=60, now=0
    )
    sid = store.add(later, now=0)
    assert store.get(sid).state(50) == "pending" and store.get(sid).state(120) == "active"
    assert store.active(120)[0].mutes({"job": "shop", "x": "1"})
    assert not store.active(120)[0].mutes({"job": "web"})
    store.expire(sid, now=130)
    assert store.active(131) == [] and store.get(sid).state(131) == "expired"
    assert [s.id for s in store.query(expired=True, now=131)] == [sid]
    with pytest.raises(SilenceError, match="already expired"):
        store.expire(sid, now=140)
    assert store.forget_expired(130 + 119 * 3600) == 0  # kept 120 h for the history
    store.close()
    again = SilenceStore(tmp_path / "alerts.db")  # another process sees it
    assert again.get(sid).comment == "deploy"
    assert again.forget_expired(131 + 120 * 3600) == 1 and again.all() == []
    again.close()


def test_changes_follow_alertmanager_set(tmp_path: Path) -> None:
    """Alertmanager's ``Silences.Set``/``canUpdate`` (silence/silence.go, v0.25.0 and
    68fb2d5 after v0.34.0): in place when the history stays true, else expire and replace."""
    store = SilenceStore(tmp_path / "alerts.db")
    base = new_silence("job=shop", created_by="ana", comment="c", starts_at=100, ends_at=500, now=0)

    def change(sid: str, now: float, **over: object) -> str:
        return store.add(dataclasses.replace(base, id=sid, **over), now=now)  # type: ignore[arg-type]

    pending = store.add(base, now=0)
    # Pending: a new start not in the past keeps the id.
    assert change(pending, 50, starts_at=60.0) == pending
    assert store.get(pending).starts_at == 60
    # Pending, start moved into the past: replaced (the new start is clamped to now).
    moved = change(pending, 55, starts_at=10.0)
    assert moved != pending and store.get(moved).starts_at == 55
    assert store.get(pending).state(55) == "expired"
    # Active: same start to the second, later end: kept; another start: replaced.
    assert change(moved, 200, starts_at=55.4, ends_at=900.0) == moved
    assert store.get(moved).ends_at == 900
    other = change(moved, 210, starts_at=80.0, ends_at=900.0)
    assert other != moved and store.get(moved).state(210) == "expired"
    # Different matchers: replaced; an expired one is not expired again, just replaced.
    narrower = change(other, 220, matchers=(*base.matchers, Matcher("env", "=", "prod")))
    assert narrower != other and store.get(other).state(220) == "expired"
    recreated = change(other, 230, starts_at=230.0, ends_at=900.0)
    assert recreated not in (other, narrower) and store.get(other).ends_at == 220
    with pytest.raises(SilenceError, match="not found"):
        change("6f1c1c54-5f34-4b51-9d08-6d9d9d1e1234", 240, ends_at=900.0)
    store.close()


@pytest.mark.parametrize(
    ("matchers", "kwargs", "reason"),
    [
        ('job=~".*"', {}, "matchers: .*must not match the empty string"),
        ("job=", {}, "matchers: .*must not match the empty string"),
        ("job=shop", {"ends_at": 0.0, "starts_at": 10.0}, "endsAt: the end must be after"),
        ("job=shop", {"created_by": "x" * 5000}, "createdBy: at most"),
        ("job=shop", {"comment": "x" * 10_000}, "comment: at most"),
        ('job="unterminated', {}, "matchers: .*unterminated"),
    ],
)
def test_bad_silences_are_refused_with_the_field(
    matchers: str, kwargs: dict[str, object], reason: str
) -> None:
    args: dict[str, object] = {"created_by": "ana", "comment": "c", "now": 0.0, **kwargs}
    with pytest.raises(SilenceError, match=f"^{reason}"):  # the field first, then why
        new_silence(matchers, **args)  # type: ignore[arg-type]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(tmp_path: Path, *args: str) -> Result:
    """``vigil ARGS`` in this process (the command line's own ``main``), data in tmp_path."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIGIL_DATA_DIR", str(tmp_path))
        mp.delenv("VIGIL_CONFIG", raising=False)
        mp.chdir(tmp_path)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    return Result(code, out.getvalue(), err.getvalue())


def test_vigil_silence_add_query_expire(tmp_path: Path) -> None:
    added = run(
        tmp_path,
        "silence",
        "add",
        'alertname="DiskFull"',
        "instance=~a|b",
        "-a",
        "ana",
        "-c",
        "disk swap",
        "-d",
        "2h",
    )
    assert added.returncode == 0, added.stderr
    sid = added.stdout.strip()
    listed = run(tmp_path, "silence", "query", "alertname=DiskFull")
    assert sid in listed.stdout and "disk swap" in listed.stdout and "ana" in listed.stdout
    assert run(tmp_path, "silence", "query", "-q").stdout.split() == [sid]
    assert run(tmp_path, "silence", "expire", sid).returncode == 0
    assert run(tmp_path, "silence", "query", "-q").stdout.split() == []
    assert run(tmp_path, "silence", "query", "--expired", "-q").stdout.split() == [sid]
    refused = run(tmp_path, "silence", "add", "alertname=X", "-a", "ana")
    assert refused.returncode == 1 and "comment" in refused.stderr
    # Without -a the creator is the user running the command.
    mine = run(tmp_path, "silence", "add", "alertname=Y", "-c", "mine").stdout.strip()
    extended = run(tmp_path, "silence", "query", "alertname=Y").stdout
    assert mine in extended and getpass.getuser() in extended


def test_an_empty_creator_is_accepted_as_alertmanager_does() -> None:
    silence = new_silence("job=shop", created_by="", comment="c", now=0.0)
    assert silence.created_by == ""
