"""Users, tokens, secret files and the ``vigil user`` / ``vigil token`` commands."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from siem.model import EventQuery
from siem.sqlite import SqliteStore
from vigil.auth import (
    AuthError,
    UserStore,
    cli_token,
    hash_password,
    read_secret_file,
    token_actor,
    verify_password,
    write_secret_file,
)
from vigil.cli import main
from vigil.deploy import DeployError, control_token
from vigil.settings import from_mapping

PASSWORD = "correct horse battery"


def test_password_hash_is_salted_scrypt_and_verifies(tmp_path: Path) -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("scrypt$32768$8$1$") and first != second
    assert PASSWORD not in first
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password(PASSWORD + "!", first)
    for broken in ("", "scrypt$1$2", "md5$x$y$z$a$b", first.replace("scrypt", "bcrypt")):
        assert not verify_password(PASSWORD, broken)


def test_users_file_holds_no_secret_in_clear(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.db")
    users.add_user("ann", "admin", PASSWORD)
    _, token = users.create_token("ci", "viewer")
    raw = (tmp_path / "users.db").read_bytes()
    assert PASSWORD.encode() not in raw and token.encode() not in raw
    assert (tmp_path / "users.db").stat().st_mode & 0o777 == 0o600


def test_users_authenticate_roles_and_refusals(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.db")
    users.add_user("ann", "operator", PASSWORD)
    found = users.authenticate("ann", PASSWORD)
    assert found is not None and (found.name, found.role) == ("ann", "operator")
    assert found.allows("viewer") and found.allows("operator") and not found.allows("admin")
    assert users.authenticate("ann", "nope nope nope") is None
    assert users.authenticate("bob", PASSWORD) is None
    with pytest.raises(AuthError, match="exists"):
        users.add_user("ann", "viewer", PASSWORD)
    with pytest.raises(AuthError, match="unknown role"):
        users.add_user("bob", "root", PASSWORD)
    with pytest.raises(AuthError, match="too short"):
        users.add_user("bob", "viewer", "short")
    with pytest.raises(AuthError, match="bad name"):
        users.add_user("bob smith", "viewer", PASSWORD)
    users.set_password("ann", "another long one")
    assert users.authenticate("ann", PASSWORD) is None
    assert users.authenticate("ann", "another long one") is not None
    users.remove_user("ann")
    assert users.authenticate("ann", "another long one") is None
    with pytest.raises(AuthError, match="no user"):
        users.remove_user("ann")


def test_tokens_scoped_and_revocable(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.db")
    token_id, secret = users.create_token("deploy-bot", "operator")
    found = users.principal_for_token(secret)
    assert found is not None and (found.name, found.role, found.via) == (
        "deploy-bot",
        "operator",
        "token",
    )
    assert users.principal_for_token(secret[:-1]) is None
    users.revoke_token(token_id)
    assert users.principal_for_token(secret) is None
    assert [(t.id, t.revoked) for t in users.list_tokens()] == [(token_id, True)]
    with pytest.raises(AuthError, match="no token"):
        users.revoke_token("nope")


def test_first_admin_created_once_with_a_random_password(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.db")
    password = users.ensure_admin()
    assert password is not None and len(password) >= 20
    found = users.authenticate("admin", password)
    assert found is not None and found.role == "admin"
    assert users.ensure_admin() is None
    assert UserStore(tmp_path / "users.db").ensure_admin() is None


def test_secret_files_are_0600_and_others_refused(tmp_path: Path) -> None:
    path = tmp_path / "run" / "x.token"
    write_secret_file(path, "s3cret")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_secret_file(path) == "s3cret"
    os.chmod(path, 0o644)
    with pytest.raises(AuthError, match="chmod 600"):
        read_secret_file(path)
    with pytest.raises(AuthError, match="cannot read"):
        read_secret_file(tmp_path / "missing")


def test_cli_token_from_env_then_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    write_secret_file(path, "from-file")
    assert cli_token({"VIGIL_TOKEN": "from-env", "VIGIL_TOKEN_FILE": str(path)}) == "from-env"
    assert cli_token({"VIGIL_TOKEN_FILE": str(path)}) == "from-file"
    assert cli_token({}) is None


def test_deploy_reads_the_control_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGIL_TOKEN", raising=False)
    monkeypatch.delenv("VIGIL_TOKEN_FILE", raising=False)
    settings = from_mapping({"data_dir": str(tmp_path)})
    with pytest.raises(DeployError, match=r"control\.token"):
        control_token(settings)
    write_secret_file(tmp_path / "run" / "control.token", "abc")
    assert control_token(settings) == "abc"
    monkeypatch.setenv("VIGIL_TOKEN", "vgt_mine")
    assert control_token(settings) == "vgt_mine"


def test_cli_user_and_token_commands_are_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIGIL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VIGIL_CONFIG", str(tmp_path / "none.yaml"))
    (tmp_path / "none.yaml").write_text("{}\n", encoding="utf-8")
    monkeypatch.setenv("USER", "root-operator")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["user", "add", "ann", "--role", "operator", "--password-stdin"]) == 0
    assert main(["user", "list"]) == 0
    assert "ann\toperator\t" in capsys.readouterr().out
    assert main(["token", "create", "ci", "--role", "viewer"]) == 0
    secret = capsys.readouterr().out.strip()
    users = UserStore(tmp_path / "users.db")
    assert users.principal_for_token(secret) is not None
    assert users.authenticate("ann", PASSWORD) is not None
    (token,) = users.list_tokens()
    assert main(["token", "revoke", token.id]) == 0
    assert users.principal_for_token(secret) is None
    assert main(["user", "remove", "nobody"]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    store = SqliteStore(tmp_path / "siem.db")
    try:
        events = store.search(EventQuery(dataset="vigil.audit"))
    finally:
        store.close()
    assert sorted((e.get("event.action"), e.get("user.name")) for e in events) == [
        ("token-create", "root-operator"),
        ("token-revoke", "root-operator"),
        ("user-add", "root-operator"),
    ]
    assert all(e.get("event.category") == ["iam"] for e in events)


def test_token_actor_names_the_token_user_not_the_claimed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = from_mapping({"data_dir": str(tmp_path)})
    _, secret = UserStore(tmp_path / "users.db").create_token("release-bot", "operator")
    monkeypatch.delenv("VIGIL_TOKEN_FILE", raising=False)
    monkeypatch.setenv("VIGIL_TOKEN", secret)
    assert token_actor(settings, "claimed") == "release-bot"
    monkeypatch.setenv("VIGIL_TOKEN", "vgt_unknown")
    assert token_actor(settings, "claimed") == "claimed"
    monkeypatch.delenv("VIGIL_TOKEN")
    assert token_actor(settings, "claimed") == "claimed"
