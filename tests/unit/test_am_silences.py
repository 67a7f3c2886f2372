"""Silences: states, validation, persistence across processes, and ``vigil silence``."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from alerting.am.silences import SilenceError, SilenceStore, new_silence
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


@pytest.mark.parametrize(
    ("matchers", "kwargs", "reason"),
    [
        ('job=~".*"', {}, "matchers: .*must not match the empty string"),
        ("job=", {}, "matchers: .*must not match the empty string"),
        ("job=shop", {"ends_at": 0.0, "starts_at": 10.0}, "endsAt: the end must be after"),
        ("job=shop", {"created_by": " "}, "createdBy: say who"),
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
