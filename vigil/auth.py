"""Users, roles, API tokens and the audit trail of Vigil's own surfaces.

Users and tokens live in a SQLite file under the data dir (``data/users.db``).
Passwords are hashed with scrypt (salted, memory-hard); API tokens are random
(256 bits) and only their SHA-256 is stored, so a copy of the file lets nobody
log in. Example::

    users = UserStore(users_path(settings))
    users.add_user("ann", "operator", "correct horse battery staple")
    token_id, secret = users.create_token("ci", "viewer")
    users.principal_for_token(secret)  # Principal(name="ci", role="viewer", via="token")
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import os
import secrets
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siem.model import Event
from vigil.errors import VigilError
from vigil.settings import Settings

ROLES = ("viewer", "operator", "admin")
"""Each role may do what the roles before it may."""
PUBLIC = "public"
"""Not a role: a route anyone may call (health, metrics, login, static files)."""

AUDIT_DATASET = "vigil.audit"
TOKEN_PREFIX = "vgt_"
# scrypt cost: 2**15 * 8 * 128 B = 32 MiB and ~50-100 ms per check, OWASP's minimum.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_NAME_MAX = 64


class AuthError(VigilError):
    """A user or token operation was refused (unknown name, bad role, weak password)."""


@dataclass(frozen=True)
class Principal:
    """Who a request or command acts as: a user name, its role, and how it proved it."""

    name: str
    role: str
    via: str = "session"

    def allows(self, role: str) -> bool:
        """True when this principal's role includes ``role`` (or the route is public)."""
        return role == PUBLIC or rank(self.role) >= rank(role)


@dataclass(frozen=True)
class UserRow:
    name: str
    role: str
    created: str


@dataclass(frozen=True)
class TokenRow:
    id: str
    name: str
    role: str
    created: str
    revoked: bool


def rank(role: str) -> int:
    """Position of ``role`` in ``ROLES``; raises ``AuthError`` for anything else."""
    try:
        return ROLES.index(role)
    except ValueError:
        raise AuthError(f"unknown role {role!r}; roles: {', '.join(ROLES)}") from None


def users_path(settings: Settings) -> Path:
    """Where the users and tokens of this installation live."""
    return Path(settings.data_dir).resolve() / "users.db"


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) of ``password`` with a fresh salt."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(want, got)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32
    )


@functools.cache
def _dummy_hash() -> str:
    # A hash to burn time on, so unknown users take as long to refuse as known
    # ones (no user enumeration by timing). Made on first use: importing this
    # module must not cost a KDF run.
    return hash_password(secrets.token_urlsafe(16))


def token_hash(secret: str) -> str:
    """What is stored for an API token: hex SHA-256 (the token has 256 random bits)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    """A user or token name: 1-64 printable characters without spaces."""
    bad = not name or len(name) > _NAME_MAX or not name.isprintable()
    if bad or any(c.isspace() for c in name):
        raise AuthError(f"bad name {name!r}: 1-{_NAME_MAX} printable characters, no spaces")
    return name


def check_password(password: str) -> str:
    """At least 10 characters: the KDF slows guessing, it cannot fix a short password."""
    if len(password) < 10:
        raise AuthError("password too short: use at least 10 characters")
    return password


class UserStore:
    """Users and API tokens in one SQLite file; safe to use from several threads/processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS users (
                    name TEXT PRIMARY KEY, role TEXT NOT NULL,
                    password_hash TEXT NOT NULL, created TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS tokens (
                    id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
                    token_hash TEXT NOT NULL UNIQUE, created TEXT NOT NULL,
                    revoked INTEGER NOT NULL DEFAULT 0);
                """
            )
        # Hashes only, but nobody else needs to read them either. A file that is not
        # ours to change (another user's install) is still fine to read.
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=10)
        except sqlite3.Error as exc:
            raise AuthError(f"{self.path}: cannot open the user database: {exc}") from None
        try:
            with db:
                yield db
        except sqlite3.Error as exc:
            raise AuthError(f"{self.path}: {exc}") from None
        finally:
            db.close()

    # -- users ---------------------------------------------------------------------------------
    def has_users(self) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    def add_user(self, name: str, role: str, password: str) -> None:
        """Create user ``name``; ``AuthError`` when it exists or the role is unknown."""
        check_name(name)
        rank(role)
        hashed = hash_password(check_password(password))
        with self._db() as db:
            try:
                db.execute(
                    "INSERT INTO users VALUES (?, ?, ?, ?)", (name, role, hashed, _now_iso())
                )
            except sqlite3.IntegrityError:
                raise AuthError(f"user {name!r} exists") from None

    def set_password(self, name: str, password: str) -> None:
        hashed = hash_password(check_password(password))
        with self._db() as db:
            cur = db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (hashed, name))
        if cur.rowcount == 0:
            raise AuthError(f"no user {name!r}")

    def remove_user(self, name: str) -> None:
        with self._db() as db:
            cur = db.execute("DELETE FROM users WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise AuthError(f"no user {name!r}")

    def list_users(self) -> list[UserRow]:
        with self._db() as db:
            rows = db.execute("SELECT name, role, created FROM users ORDER BY name").fetchall()
        return [UserRow(*row) for row in rows]

    def authenticate(self, name: str, password: str) -> Principal | None:
        """The user's principal when ``password`` is theirs, else None (same time either way)."""
        with self._db() as db:
            row = db.execute(
                "SELECT role, password_hash FROM users WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            verify_password(password, _dummy_hash())
            return None
        role, hashed = row
        return Principal(name, role, "session") if verify_password(password, hashed) else None

    def user_role(self, name: str) -> str | None:
        """The role of user ``name`` now (None once removed): sessions re-check it."""
        with self._db() as db:
            row = db.execute("SELECT role FROM users WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    def ensure_admin(self, name: str = "admin") -> str | None:
        """With no user at all, create admin ``name`` with a random password and return it once."""
        if self.has_users():
            return None
        password = secrets.token_urlsafe(18)
        try:
            self.add_user(name, "admin", password)
        except AuthError:
            return None  # another process created it first
        return password

    # -- tokens --------------------------------------------------------------------------------
    def create_token(self, name: str, role: str) -> tuple[str, str]:
        """A new API token: (id, secret). Only the secret's hash is kept."""
        check_name(name)
        rank(role)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = uuid.uuid4().hex[:12]
        with self._db() as db:
            db.execute(
                "INSERT INTO tokens (id, name, role, token_hash, created) VALUES (?, ?, ?, ?, ?)",
                (token_id, name, role, token_hash(secret), _now_iso()),
            )
        return token_id, secret

    def list_tokens(self) -> list[TokenRow]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, name, role, created, revoked FROM tokens ORDER BY created, id"
            ).fetchall()
        return [TokenRow(i, n, r, c, bool(v)) for i, n, r, c, v in rows]

    def revoke_token(self, token_id: str) -> TokenRow:
        """Revoke by id; the token stops working on its next request."""
        with self._db() as db:
            cur = db.execute("UPDATE tokens SET revoked = 1 WHERE id = ?", (token_id,))
        if cur.rowcount == 0:
            raise AuthError(f"no token {token_id!r}; see `vigil token list`")
        (row,) = [t for t in self.list_tokens() if t.id == token_id]
        return row

    def principal_for_token(self, secret: str) -> Principal | None:
        """Who an ``Authorization: Bearer`` secret belongs to, or None (unknown or revoked)."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        with self._db() as db:
            row = db.execute(
                "SELECT name, role FROM tokens WHERE token_hash = ? AND revoked = 0",
                (token_hash(secret),),
            ).fetchone()
        return Principal(row[0], row[1], "token") if row else None


# -- secrets in files ------------------------------------------------------------------------------
def write_secret_file(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` readable by its owner only (0600 from the start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(value + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def read_secret_file(path: Path) -> str:
    """The secret in ``path``; refused when group or others may read it."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise AuthError(f"{path}: readable by others (mode {mode & 0o777:o}); chmod 600 it")
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AuthError(f"cannot read {path}: {exc.strerror}") from None
    if not value:
        raise AuthError(f"{path}: empty")
    return value


def control_token_path(settings: Settings) -> Path:
    """Where ``vigil up`` writes its control API's token (0600)."""
    return Path(settings.data_dir).resolve() / "run" / "control.token"


def cli_token(env: dict[str, str] | None = None) -> str | None:
    """The CLI's API token: ``$VIGIL_TOKEN``, else the 0600 file ``$VIGIL_TOKEN_FILE``."""
    env = dict(os.environ) if env is None else env
    if env.get("VIGIL_TOKEN"):
        return env["VIGIL_TOKEN"].strip()
    if env.get("VIGIL_TOKEN_FILE"):
        return read_secret_file(Path(env["VIGIL_TOKEN_FILE"]))
    return None


def token_actor(settings: Settings, fallback: str) -> str:
    """Who the CLI acts as: the user of ``$VIGIL_TOKEN`` / ``$VIGIL_TOKEN_FILE`` when it is a
    known user token (a name the caller cannot pick), else ``fallback`` (``--actor``/``$USER``:
    without a user token the caller proved only that it may read the data dir)."""
    try:
        secret = cli_token()
    except AuthError:
        return fallback
    if not secret:
        return fallback
    try:
        found = UserStore(users_path(settings)).principal_for_token(secret)
    except AuthError:
        return fallback
    return found.name if found else fallback


# -- audit -----------------------------------------------------------------------------------------
def audit_event(
    action: str,
    *,
    actor: str,
    outcome: str = "success",
    category: str = "iam",
    source_ip: str | None = None,
    message: str = "",
    labels: dict[str, Any] | None = None,
    at: float | None = None,
) -> Event:
    """A ``vigil.audit`` event (ECS): who (``user.name``) did what (``event.action``)."""
    now = time.time() if at is None else at
    doc: dict[str, Any] = {
        "@timestamp": dt.datetime.fromtimestamp(now, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "message": message or f"{actor} {action}: {outcome}",
        "event": {
            "dataset": AUDIT_DATASET,
            "kind": "event",
            "category": [category],
            "type": ["change"] if category == "configuration" else ["info"],
            "action": action,
            "outcome": outcome,
        },
        "user": {"name": actor},
        "service": {"name": "vigil"},
    }
    if source_ip:
        doc["source"] = {"ip": source_ip}
    if labels:
        doc["labels"] = {k: str(v) for k, v in labels.items()}
    return Event.from_doc(doc, source=AUDIT_DATASET, position=uuid.uuid4().hex)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
