"""Authentication and authorisation for the Flight SQL server.

Model
-----
* With no users and no static tokens configured, authentication is off and
  every call runs as ``anonymous`` with all permissions.  That is only
  acceptable on loopback, which :func:`check_bind_allowed` enforces.
* With users configured, clients authenticate with HTTP-style
  ``authorization`` headers:

  - ``Basic <base64 user:password>`` -- verified against a PBKDF2 hash, then
    exchanged for a random session bearer token that is returned in the
    ``authorization`` response header.  ADBC (Go), JDBC and
    ``FlightClient.authenticate_basic_token`` send Basic on the Handshake RPC
    and use the returned bearer afterwards.
  - ``Bearer <token>`` -- a session token issued as above, or a static token
    from the configuration.

* Permissions are checked per operation with
  ``current_auth(context).require("read")`` / ``require("ingest")``.

Wiring into a server::

    settings = AuthSettings.from_config(config.auth)
    check_bind_allowed(host, settings.enabled, insecure)
    server = MyFlightServer(
        location,
        auth_handler=NoOpAuthHandler(),      # makes the Handshake RPC succeed
        middleware={MIDDLEWARE_KEY: AuthMiddlewareFactory(settings)},
        tls_certificates=tls_certificates(cert_file, key_file),
    )

``auth_handler=NoOpAuthHandler()`` is required: without a ``ServerAuthHandler``
the C++ server answers Handshake with UNIMPLEMENTED, and ADBC/JDBC clients
given a username perform a Handshake first.  The real checking happens in the
middleware, which also sees the Handshake call.
"""

from __future__ import annotations

import binascii
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# pyarrow ships no type information; the ignores stay correct whether or not
# the project config later sets ignore_missing_imports for it.
import pyarrow.flight as flight  # type: ignore[import-untyped, unused-ignore]

from tierflight.core.config import AuthConfig, auth_config
from tierflight.core.errors import AuthConfigError
from tierflight.core.passwords import (
    DEFAULT_ITERATIONS,
    HASH_ALGORITHM,
    b64decode_lenient,
    hash_password,
    parse_hash,
    verify_password,
)
from tierflight.protocol.throttle import Limits, LoginThrottle, retry_message
from tierflight.protocol.transport import check_bind_allowed, tls_certificates

__all__ = [
    "ALL_PERMISSIONS",
    "ANONYMOUS_USER",
    "DEFAULT_ITERATIONS",
    "ENV_USERS",
    "MIDDLEWARE_KEY",
    "AuthConfigError",
    "AuthMiddleware",
    "AuthMiddlewareFactory",
    "AuthSettings",
    "NoOpAuthHandler",
    "User",
    "check_bind_allowed",
    "current_auth",
    "hash_password",
    "server_auth_options",
    "tls_certificates",
    "verify_password",
]

log = logging.getLogger(__name__)

MIDDLEWARE_KEY = "auth"
ENV_USERS = "TIERFLIGHT_USERS"
ANONYMOUS_USER = "anonymous"
# "admin": sees every user's statements in system.queries and may cancel them.
ADMIN = "admin"
ALL_PERMISSIONS: frozenset[str] = frozenset({"read", "ingest", ADMIN})
DEFAULT_PERMISSIONS: frozenset[str] = frozenset({"read"})

# Static tokens are long-lived secrets sent on every call; short ones are
# guessable.
_MIN_STATIC_TOKEN_LENGTH = 16
_HASH_HELP = "create one with `tierflight hash-password`"
_TOKEN_HELP = "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------


def _check_user_name(name: str, where: str) -> None:
    # Basic auth splits "user:password" at the first colon, so a colon in a
    # user name could never log in; whitespace/control characters are
    # almost certainly copy-paste accidents.
    if not name:
        raise AuthConfigError(f"{where}: user name must not be empty")
    if ":" in name or any(ch.isspace() or not ch.isprintable() for ch in name):
        raise AuthConfigError(
            f"{where}: user name {name!r} must not contain ':', whitespace or control characters"
        )


def _check_permissions(perms: Iterable[str], where: str) -> frozenset[str]:
    result = frozenset(perms)
    unknown = sorted(result - ALL_PERMISSIONS)
    if unknown:
        raise AuthConfigError(
            f"{where}: unknown permission(s) {', '.join(map(repr, unknown))}; "
            f"valid permissions are {', '.join(sorted(ALL_PERMISSIONS))}"
        )
    return result


@dataclass(frozen=True)
class User:
    """A configured principal.

    ``password_hash`` is None for users that can only authenticate with a
    static bearer token (e.g. an ingest service account).
    """

    name: str
    password_hash: str | None
    permissions: frozenset[str] = DEFAULT_PERMISSIONS

    def __post_init__(self) -> None:
        _check_user_name(self.name, f"user {self.name!r}")
        if self.password_hash is not None:
            try:
                parse_hash(self.password_hash)
            except ValueError as exc:
                raise AuthConfigError(
                    f"auth.users.{self.name}.password_hash is not a "
                    f"{HASH_ALGORITHM} hash ({exc}); {_HASH_HELP}"
                ) from None
        object.__setattr__(
            self,
            "permissions",
            _check_permissions(self.permissions, f"auth.users.{self.name}.permissions"),
        )


def _empty_mapping() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class AuthSettings:
    """Who may connect and with which permissions.

    ``users`` maps user name to :class:`User`; ``tokens`` maps a static
    bearer token to a user name.  Authentication is enabled as soon as either
    is non-empty.  ``token_ttl_seconds`` is the idle lifetime of the session
    tokens handed out for Basic credentials.
    """

    users: Mapping[str, User] = field(default_factory=_empty_mapping)
    tokens: Mapping[str, str] = field(default_factory=_empty_mapping)
    token_ttl_seconds: int = 3600
    # Login throttling (protocol/throttle.py): attempts of one user name before the backoff,
    # and the longest window in which its further attempts are refused.
    max_failed_logins: int = 5
    login_backoff_cap_seconds: int = 60

    def __post_init__(self) -> None:
        # Freeze copies so a caller mutating its dict cannot change who is
        # allowed in behind the factory's back.
        users = dict(self.users)
        tokens = dict(self.tokens)
        for key, user in users.items():
            if key != user.name:
                raise AuthConfigError(f"auth.users: key {key!r} does not match user name {user.name!r}")
        for token, user_name in tokens.items():
            if user_name not in users:
                raise AuthConfigError(
                    f"auth.tokens: a token refers to unknown user {user_name!r}; "
                    f"add an [auth.users.{user_name}] section"
                )
            if len(token) < _MIN_STATIC_TOKEN_LENGTH or any(
                ch.isspace() or not ch.isprintable() for ch in token
            ):
                # Never echo the token itself: it is a secret.
                raise AuthConfigError(
                    f"auth.tokens: the token for user {user_name!r} must be at "
                    f"least {_MIN_STATIC_TOKEN_LENGTH} printable characters "
                    f"without whitespace; {_TOKEN_HELP}"
                )
        if (
            isinstance(self.token_ttl_seconds, bool)
            or not isinstance(self.token_ttl_seconds, int)
            or self.token_ttl_seconds <= 0
        ):
            raise AuthConfigError("auth.token_ttl_seconds must be a positive integer number of seconds")
        for key in ("max_failed_logins", "login_backoff_cap_seconds"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise AuthConfigError(f"auth.{key} must be a positive integer")
        object.__setattr__(self, "users", MappingProxyType(users))
        object.__setattr__(self, "tokens", MappingProxyType(tokens))

    @property
    def enabled(self) -> bool:
        return bool(self.users) or bool(self.tokens)

    @classmethod
    def from_mapping(
        cls,
        section: Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
    ) -> AuthSettings:
        """Build settings from the ``[auth]`` TOML section plus the environment.

        TOML::

            [auth]
            token_ttl_seconds = 3600          # idle lifetime of session tokens
            [auth.users.alice]
            password_hash = "pbkdf2_sha256$600000$<salt b64>$<hash b64>"
            permissions = ["read", "ingest"]  # default ["read"]; also "admin"
            [auth.users.loader]               # no password: token-only user
            permissions = ["ingest"]
            [auth.tokens]
            "secret-token-value" = "loader"   # static bearer token -> user

        Environment (``environ`` defaults to ``os.environ``)::

            TIERFLIGHT_USERS='alice:<password_hash>:read+ingest,bob:<password_hash>'

        Entries are ``name:hash[:perm+perm...]`` separated by commas; the
        permissions default to ``read`` and an empty hash makes a token-only
        user.  Users from the environment replace TOML users of the same
        name.  Quote the value with single quotes in a shell, because the
        hashes contain ``$``.

        Raises ValueError with a message that says how to fix the entry.
        """
        return cls.from_config(auth_config(section), environ)

    @classmethod
    def from_config(cls, config: AuthConfig, environ: Mapping[str, str] | None = None) -> AuthSettings:
        """Settings from the typed ``[auth]`` section (see :meth:`from_mapping`) plus the
        ``TIERFLIGHT_USERS`` environment, whose users replace TOML users of the same name."""
        env = os.environ if environ is None else environ
        users: dict[str, User] = {}
        for name, user in config.users.items():
            _check_user_name(name, f"auth.users.{name}")
            users[name] = User(name=name, password_hash=user.password_hash, permissions=frozenset(user.permissions))
        users.update(_users_from_env(env.get(ENV_USERS, "")))
        return cls(
            users=users,
            tokens=dict(config.tokens),
            token_ttl_seconds=config.token_ttl_seconds,
            max_failed_logins=config.max_failed_logins,
            login_backoff_cap_seconds=config.login_backoff_cap_seconds,
        )


def _users_from_env(value: str) -> dict[str, User]:
    users: dict[str, User] = {}
    for index, raw_entry in enumerate(value.split(",")):
        entry = raw_entry.strip()
        if not entry:
            continue
        where = f"{ENV_USERS} entry {index + 1}"
        parts = entry.split(":")
        if len(parts) not in (2, 3):
            raise AuthConfigError(
                f"{where}: expected name:password_hash[:perm+perm], e.g. alice:pbkdf2_sha256$...:read+ingest"
            )
        name = parts[0].strip()
        _check_user_name(name, where)
        password_hash = parts[1].strip() or None
        if len(parts) == 3:
            perm_list = [p.strip() for p in parts[2].split("+")]
            if not all(perm_list):
                raise AuthConfigError(f"{where}: permissions must be joined with '+', e.g. read+ingest")
            perms = _check_permissions(perm_list, f"{where} ({name}) permissions")
        else:
            perms = DEFAULT_PERMISSIONS
        if password_hash is not None:
            try:
                parse_hash(password_hash)
            except ValueError as exc:
                raise AuthConfigError(
                    f"{where}: the password hash for {name!r} is not a "
                    f"{HASH_ALGORITHM} hash ({exc}); {_HASH_HELP}"
                ) from None
        users[name] = User(name=name, password_hash=password_hash, permissions=perms)
    return users


# ---------------------------------------------------------------------------
# Flight middleware
# ---------------------------------------------------------------------------


class AuthMiddleware(flight.ServerMiddleware):  # type: ignore[misc, unused-ignore]
    """Per-call identity; fetch it in handlers with :func:`current_auth`."""

    def __init__(
        self,
        user: str,
        permissions: Iterable[str],
        issued_token: str | None = None,
    ) -> None:
        super().__init__()
        self.user: str = user
        self.permissions: frozenset[str] = frozenset(permissions)
        self._issued_token = issued_token

    def require(self, permission: str) -> None:
        """Raise PERMISSION_DENIED unless this caller holds *permission*."""
        if permission not in self.permissions:
            raise flight.FlightUnauthorizedError(
                f"user {self.user!r} does not have the {permission!r} permission"
            )

    def sending_headers(self) -> dict[str, str] | None:
        # Clients (ADBC Go, JDBC, FlightClient.authenticate_basic_token) pick
        # the bearer up from the response headers of the call that carried
        # Basic credentials and use it from then on.
        if self._issued_token is None:
            return None
        return {"authorization": f"Bearer {self._issued_token}"}

    def __repr__(self) -> str:
        # Deliberately omits the issued token.
        return f"AuthMiddleware(user={self.user!r}, permissions={sorted(self.permissions)!r})"


class NoOpAuthHandler(flight.ServerAuthHandler):  # type: ignore[misc, unused-ignore]
    """Lets the Handshake RPC succeed; authentication is done by the middleware.

    Pass as ``FlightServerBase(auth_handler=NoOpAuthHandler())``.  Without an
    auth handler the server rejects Handshake as UNIMPLEMENTED, which breaks
    ADBC/JDBC clients configured with a username.
    """

    def authenticate(self, outgoing: Any, incoming: Any) -> None:
        return None

    def is_valid(self, token: bytes) -> str:
        return ""


# The caller of every RPC while authentication is off (never handed to pyarrow: read-only).
ANONYMOUS = AuthMiddleware(ANONYMOUS_USER, ALL_PERMISSIONS)

_REQUIRED_MESSAGE = (
    "authentication required: send 'authorization: Basic <base64 user:password>' "
    "or 'authorization: Bearer <token>'"
)
_BAD_CREDENTIALS = "invalid username or password"
_BAD_TOKEN = "invalid or expired bearer token; authenticate again with username and password"
_VERIFY_CACHE_LIMIT = 4096
_PURGE_INTERVAL_SECONDS = 60.0
_TARPIT_SECONDS = 1.0
_TARPIT_SLOTS = 32
_SAME_CREDENTIALS_WAIT_SECONDS = 10.0


class _Session:
    __slots__ = ("expires", "user")

    def __init__(self, user: str, expires: float) -> None:
        self.user = user
        self.expires = expires


class AuthMiddlewareFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc, unused-ignore]
    """Authenticates every call; register under :data:`MIDDLEWARE_KEY`.

    Session tokens live in memory only (a restart logs everyone out) and
    expire after ``token_ttl_seconds`` without use; each use extends them,
    because ADBC/JDBC connections never re-authenticate on their own.
    """

    def __init__(
        self,
        settings: AuthSettings,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self._sleep = sleep
        # Refusals are held back a little (the guesser waits, not the CPU: a sleeping thread
        # holds no GIL), so a flood of refused guesses does not crowd out other calls. Bounded:
        # past this many held at once, refusals are immediate.
        self._tarpit = threading.BoundedSemaphore(_TARPIT_SLOTS)
        self._settings = settings
        self._clock = clock
        self._ttl = float(settings.token_ttl_seconds)
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        # (user, stored hash, keyed digest of password) -> session token, so
        # clients that send Basic on every call reuse one session instead of
        # growing the table by one entry per call.
        self._session_for_credentials: dict[tuple[str, str, bytes], str] = {}
        # Successful PBKDF2 verifications.  Keyed by an HMAC with a
        # per-process random key rather than a bare sha256, so a memory dump
        # does not hand out cheap-to-crack password digests.
        self._verified: set[tuple[str, str, bytes]] = set()
        # Verifications under way, by credentials (see _known_good).
        self._verifying: dict[tuple[str, str, bytes], threading.Event] = {}
        self._cache_key = secrets.token_bytes(32)
        self._last_purge = clock()
        # Unknown user names still pay for one PBKDF2 run so response time
        # does not reveal which names exist.
        iterations = [
            parse_hash(u.password_hash).iterations
            for u in settings.users.values()
            if u.password_hash is not None
        ]
        self._dummy_hash = hash_password("", max(iterations, default=1))
        # Checked before any password hash runs (see protocol/throttle.py). The shared key
        # bounds guesses spread over many names: a larger allowance, a shorter window.
        cap = float(settings.login_backoff_cap_seconds)
        self.throttle = LoginThrottle(
            Limits(settings.max_failed_logins, cap),
            Limits(10 * settings.max_failed_logins, min(cap, 10.0)),
            clock=clock,
        )

    @property
    def settings(self) -> AuthSettings:
        return self._settings

    def start_call(self, info: Any, headers: Mapping[str, list[Any]]) -> AuthMiddleware | None:
        if not self._settings.enabled:
            # No instance (a server with auth off installs no factory at all, see
            # server_auth_options): handlers read a missing middleware as the anonymous caller.
            return None
        header = _first_header(headers, "authorization")

        if header is None:
            raise flight.FlightUnauthenticatedError(_REQUIRED_MESSAGE)
        scheme, credentials = _split_scheme(header)
        if scheme == "basic":
            return self._basic(credentials)
        if scheme == "bearer":
            return self._bearer(credentials)
        # Never echo the header: a client that forgot the scheme sent a secret.
        raise flight.FlightUnauthenticatedError("unsupported authorization scheme; use Basic or Bearer")

    # -- Basic --------------------------------------------------------------

    def _basic(self, credentials: str) -> AuthMiddleware:
        try:
            decoded = b64decode_lenient(credentials).decode("utf-8")
        except (binascii.Error, ValueError):
            # UnicodeDecodeError is a ValueError.
            raise flight.FlightUnauthenticatedError(
                "malformed Basic credentials: expected base64 of 'user:password'"
            ) from None
        name, sep, password = decoded.partition(":")
        if not sep:
            raise flight.FlightUnauthenticatedError(
                "malformed Basic credentials: expected base64 of 'user:password'"
            )

        user = self._settings.users.get(name)
        if user is None or user.password_hash is None:
            # Throttled like a known name: the answer must not tell which names exist.
            self._admit(name)
            verify_password(password, self._dummy_hash)
            log.info("basic authentication failed for user %r", name)
            raise flight.FlightUnauthenticatedError(_BAD_CREDENTIALS)

        cache_key = (
            name,
            user.password_hash,
            hmac.new(self._cache_key, password.encode("utf-8"), "sha256").digest(),
        )
        if not self._known_good(cache_key):
            self._verify(name, password, user.password_hash, cache_key)

        token = self._session_token(cache_key, name)
        return AuthMiddleware(user.name, user.permissions, issued_token=token)

    def _known_good(self, cache_key: tuple[str, str, bytes]) -> bool:
        """Whether these credentials were verified before, waiting for a verification of the
        same credentials already under way: a pool opening ten connections at once runs one
        hash, and its other logins are not counted as attempts by the throttle."""
        with self._lock:
            if cache_key in self._verified:
                return True
            pending = self._verifying.get(cache_key)
        if pending is None:
            return False
        pending.wait(_SAME_CREDENTIALS_WAIT_SECONDS)
        with self._lock:
            return cache_key in self._verified

    def _verify(self, name: str, password: str, stored: str, cache_key: tuple[str, str, bytes]) -> None:
        done = threading.Event()
        with self._lock:
            leader = self._verifying.setdefault(cache_key, done) is done
        try:
            # Credentials verified before skip the throttle: a guesser cannot lock out a
            # user whose password this process has already seen.
            self._admit(name)
            # Outside the lock: PBKDF2 takes ~0.3 s and releases the GIL, so
            # concurrent logins proceed in parallel.
            if not verify_password(password, stored):
                log.info("basic authentication failed for user %r", name)
                raise flight.FlightUnauthenticatedError(_BAD_CREDENTIALS)
            self.throttle.succeeded(name)
            with self._lock:
                if len(self._verified) >= _VERIFY_CACHE_LIMIT:
                    self._verified.clear()
                self._verified.add(cache_key)
        finally:
            if leader:
                with self._lock:
                    del self._verifying[cache_key]
                done.set()

    def _admit(self, name: str) -> None:
        wait = self.throttle.admit(name)
        if wait <= 0:
            return
        if self._tarpit.acquire(blocking=False):
            held = min(wait, _TARPIT_SECONDS)
            try:
                self._sleep(held)
            finally:
                self._tarpit.release()
            wait -= held
        raise flight.FlightUnauthenticatedError(retry_message(wait))

    def _session_token(self, cache_key: tuple[str, str, bytes], user: str) -> str:
        now = self._clock()
        with self._lock:
            self._maybe_purge(now)
            token = self._session_for_credentials.get(cache_key)
            session = self._sessions.get(token) if token is not None else None
            if token is None or session is None or session.expires <= now:
                token = secrets.token_urlsafe(32)
                self._sessions[token] = _Session(user, now + self._ttl)
                self._session_for_credentials[cache_key] = token
            else:
                session.expires = now + self._ttl
            return token

    def _maybe_purge(self, now: float) -> None:
        # Lazy purge, called with the lock held.  Rate-limited so a burst of
        # logins does not scan the whole table each time.
        if now - self._last_purge < _PURGE_INTERVAL_SECONDS:
            return
        self._last_purge = now
        expired = {t for t, s in self._sessions.items() if s.expires <= now}
        for token in expired:
            del self._sessions[token]
        self._session_for_credentials = {
            k: t for k, t in self._session_for_credentials.items() if t not in expired
        }

    # -- Bearer -------------------------------------------------------------

    def _bearer(self, token: str) -> AuthMiddleware:
        token = token.strip()
        if not token:
            raise flight.FlightUnauthenticatedError(_BAD_TOKEN)
        user_name: str | None = None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is not None:
                if session.expires > now:
                    session.expires = now + self._ttl
                    user_name = session.user
                else:
                    del self._sessions[token]
        if user_name is None:
            user_name = self._settings.tokens.get(token)
        user = self._settings.users.get(user_name) if user_name is not None else None
        if user is None:
            raise flight.FlightUnauthenticatedError(_BAD_TOKEN)
        return AuthMiddleware(user.name, user.permissions)


def server_auth_options(settings: AuthSettings) -> dict[str, Any]:
    """The ``FlightServerBase`` keyword arguments that authenticate calls per ``settings``.

    With authentication off there is neither an auth handler nor a middleware: pyarrow calls
    each of them into Python (taking the GIL) on every RPC, which is more than a third of
    what a reused answer costs a busy server. A client that sends credentials anyway is told
    that no authentication mechanism is enabled (Handshake answers UNIMPLEMENTED), the way
    other Flight SQL servers without auth refuse them.
    """
    if not settings.enabled:
        return {}
    return {"auth_handler": NoOpAuthHandler(), "middleware": {MIDDLEWARE_KEY: AuthMiddlewareFactory(settings)}}


def _first_header(headers: Mapping[str, list[Any]], name: str) -> str | None:
    values = headers.get(name) or []
    if not values:
        return None
    value = values[0]
    if isinstance(value, bytes):
        # Text headers arrive as str; bytes would mean a binary header, which
        # cannot hold valid credentials.  Map to a value no scheme accepts.
        return ""
    return str(value)


def _split_scheme(header: str) -> tuple[str, str]:
    # Auth schemes are case-insensitive (RFC 9110 §11.1).
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), rest.strip()


def current_auth(context: Any) -> AuthMiddleware:
    """The caller's identity for *context* (a ``ServerCallContext``).

    Returns an anonymous identity with every permission when the server was
    built without the auth middleware, i.e. authentication is not in use.
    """
    middleware = context.get_middleware(MIDDLEWARE_KEY)
    if middleware is None:
        return ANONYMOUS
    if not isinstance(middleware, AuthMiddleware):
        raise TypeError(
            f"middleware registered under {MIDDLEWARE_KEY!r} is "
            f"{type(middleware).__name__}, not AuthMiddleware"
        )
    return middleware
