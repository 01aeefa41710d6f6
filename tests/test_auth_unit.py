"""Unit and small end-to-end tests for tierflight.protocol.auth."""

from __future__ import annotations

import base64
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from tierflight.core.errors import ConfigError

from conftest import self_signed_cert
from tierflight.protocol import auth
from tierflight.protocol.auth import (
    ALL_PERMISSIONS,
    MIDDLEWARE_KEY,
    AuthConfigError,
    AuthMiddleware,
    AuthMiddlewareFactory,
    AuthSettings,
    NoOpAuthHandler,
    User,
    check_bind_allowed,
    current_auth,
    hash_password,
    server_auth_options,
    tls_certificates,
    verify_password,
)

# Low iteration counts keep the suite fast; the format is identical.
FAST = 1_000
ALICE_PW = "correct horse battery staple"
BOB_PW = "hunter2-but-longer"
STATIC_TOKEN = "static-token-0123456789abcdef"


@pytest.fixture(scope="module")
def alice_hash() -> str:
    return hash_password(ALICE_PW, iterations=FAST)


@pytest.fixture(scope="module")
def bob_hash() -> str:
    return hash_password(BOB_PW, iterations=FAST)


@pytest.fixture
def settings(alice_hash: str, bob_hash: str) -> AuthSettings:
    return AuthSettings.from_mapping(
        {
            "token_ttl_seconds": 100,
            "users": {
                "alice": {"password_hash": alice_hash, "permissions": ["read", "ingest"]},
                "bob": {"password_hash": bob_hash},
                "loader": {"permissions": ["ingest"]},
            },
            "tokens": {STATIC_TOKEN: "loader"},
        },
        environ={},
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(user: str, password: str, *, pad: bool = True) -> dict[str, list[str]]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    if not pad:
        encoded = encoded.rstrip("=")
    return {"authorization": [f"Basic {encoded}"]}


def bearer(token: str) -> dict[str, list[str]]:
    return {"authorization": [f"Bearer {token}"]}


def issued_token(mw: AuthMiddleware) -> str:
    headers = mw.sending_headers()
    assert headers is not None
    scheme, _, token = headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    assert token
    return token


# ---------------------------------------------------------------------------
# Password hashing
# ---------------------------------------------------------------------------


def test_hash_format_and_verify() -> None:
    stored = hash_password("pw", iterations=FAST)
    algo, iterations, salt, digest = stored.split("$")
    assert (algo, iterations) == ("pbkdf2_sha256", str(FAST))
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32
    assert verify_password("pw", stored)
    # Fresh salt each time.
    assert hash_password("pw", iterations=FAST) != stored


def test_default_iterations() -> None:
    stored = hash_password("pw")
    assert stored.split("$")[1] == "600000"
    assert verify_password("pw", stored)


def test_wrong_password_and_malformed_hash() -> None:
    stored = hash_password("pw", iterations=FAST)
    assert not verify_password("PW", stored)
    assert not verify_password("", stored)
    for bad in [
        "",
        "pw",
        "md5$1$a$b",
        "pbkdf2_sha256$x$AAAA$AAAA",
        "pbkdf2_sha256$0$AAAA$AAAA",
        "pbkdf2_sha256$10$!!$AAAA",
    ]:
        assert not verify_password("pw", bad)


def test_unpadded_hash_accepted() -> None:
    stored = hash_password("pw", iterations=FAST)
    algo, iterations, salt, digest = stored.split("$")
    unpadded = "$".join([algo, iterations, salt.rstrip("="), digest.rstrip("=")])
    assert verify_password("pw", unpadded)


def test_non_ascii_password() -> None:
    stored = hash_password("pässwörd✓", iterations=FAST)
    assert verify_password("pässwörd✓", stored)
    assert not verify_password("passwort", stored)


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------


def test_settings_from_mapping(settings: AuthSettings) -> None:
    assert settings.enabled
    assert settings.token_ttl_seconds == 100
    assert settings.users["alice"].permissions == {"read", "ingest"}
    assert settings.users["bob"].permissions == {"read"}
    assert settings.users["loader"].password_hash is None
    assert settings.tokens == {STATIC_TOKEN: "loader"}


def test_settings_disabled_by_default() -> None:
    assert not AuthSettings().enabled
    assert not AuthSettings.from_mapping({}, environ={}).enabled
    assert AuthSettings.from_mapping({}, environ={}).token_ttl_seconds == 3600


def test_settings_are_frozen_copies(alice_hash: str) -> None:
    users = {"alice": User("alice", alice_hash)}
    settings = AuthSettings(users=users)
    users["mallory"] = User("mallory", alice_hash)
    assert "mallory" not in settings.users
    with pytest.raises(TypeError):
        settings.users["x"] = User("x", None)  # type: ignore[index]


def test_bad_hash_message_says_how_to_fix() -> None:
    with pytest.raises(
        ValueError, match=r"auth\.users\.alice\.password_hash is not a pbkdf2_sha256 hash"
    ) as exc:
        AuthSettings.from_mapping({"users": {"alice": {"password_hash": "plaintext"}}}, environ={})
    assert "tierflight hash-password" in str(exc.value)
    # Also a ConfigError, so the CLI reports it like other config problems.
    assert isinstance(exc.value, ConfigError)
    assert isinstance(exc.value, AuthConfigError)


@pytest.mark.parametrize(
    ("section", "pattern"),
    [
        (
            {"users": {"alice": {"permissions": ["read", "superuser"]}}},
            r"unknown permission.*'superuser'.*admin, ingest, read",
        ),
        ({"users": {"alice": {"permissions": "read"}}}, r"auth\.users\.alice\.permissions must be a list"),
        ({"users": {"alice": {"password_hash": ""}}}, r"password_hash is empty"),
        ({"users": {"alice": {"passwd": "x"}}}, r"unknown key.*'passwd'"),
        ({"users": {"al:ice": {}}}, r"must not contain ':'"),
        ({"users": {"alice": "x"}}, r"auth\.users\.alice must be a table"),
        ({"users": []}, r"\[auth\.users\] must be a table"),
        ({"tokens": {STATIC_TOKEN: "nobody"}}, r"unknown user 'nobody'.*\[auth\.users\.nobody\]"),
        ({"users": {"a": {}}, "tokens": {"short": "a"}}, r"at least 16.*token_urlsafe"),
        ({"tokens": ["x"]}, r"\[auth\.tokens\] must be a table"),
        ({"token_ttl_seconds": 0}, r"token_ttl_seconds must be a positive integer"),
        ({"token_ttl_seconds": "1h"}, r"token_ttl_seconds must be a positive integer"),
        ({"token_ttl_seconds": True}, r"token_ttl_seconds must be a positive integer"),
        ({"userz": {}}, r"unknown key.*'userz'"),
    ],
)
def test_invalid_settings(section: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        AuthSettings.from_mapping(section, environ={})


def test_static_token_is_not_echoed_in_errors() -> None:
    secret = "tiny secret"
    with pytest.raises(ValueError) as exc:
        AuthSettings.from_mapping({"users": {"a": {}}, "tokens": {secret: "a"}}, environ={})
    assert secret not in str(exc.value)


def test_env_users(alice_hash: str, bob_hash: str) -> None:
    env = {"TIERFLIGHT_USERS": f" alice:{alice_hash}:read+ingest , bob:{bob_hash},,carol::ingest "}
    settings = AuthSettings.from_mapping({}, environ=env)
    assert settings.enabled
    assert settings.users["alice"] == User("alice", alice_hash, frozenset({"read", "ingest"}))
    assert settings.users["bob"] == User("bob", bob_hash, frozenset({"read"}))
    assert settings.users["carol"] == User("carol", None, frozenset({"ingest"}))


def test_env_users_override_toml(alice_hash: str, bob_hash: str) -> None:
    section = {"users": {"alice": {"password_hash": bob_hash}, "dave": {"password_hash": bob_hash}}}
    settings = AuthSettings.from_mapping(section, environ={"TIERFLIGHT_USERS": f"alice:{alice_hash}"})
    assert settings.users["alice"].password_hash == alice_hash
    assert settings.users["dave"].password_hash == bob_hash


def test_env_users_default_to_os_environ(monkeypatch: pytest.MonkeyPatch, alice_hash: str) -> None:
    monkeypatch.setenv("TIERFLIGHT_USERS", f"alice:{alice_hash}")
    assert "alice" in AuthSettings.from_mapping({}).users


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("alice", r"TIERFLIGHT_USERS entry 1: expected name:password_hash"),
        ("alice:x:read:more", r"expected name:password_hash"),
        (
            "alice:plaintext",
            r"password hash for 'alice' is not a pbkdf2_sha256 hash.*tierflight hash-password",
        ),
        ("alice::read+", r"joined with '\+'"),
        ("alice::read+write", r"unknown permission.*'write'"),
        (":x", r"user name must not be empty"),
    ],
)
def test_env_users_invalid(value: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        AuthSettings.from_mapping({}, environ={"TIERFLIGHT_USERS": value})


# ---------------------------------------------------------------------------
# Middleware factory
# ---------------------------------------------------------------------------


def test_disabled_is_anonymous_with_all_permissions() -> None:
    factory = AuthMiddlewareFactory(AuthSettings())
    # No middleware for the call (nothing more for pyarrow to call back): the handlers'
    # current_auth reads that as the anonymous caller with every permission.
    assert factory.start_call(None, {}) is None
    assert factory.start_call(None, bearer("anything")) is None
    mw = current_auth(FakeContext(None))
    assert mw.user == "anonymous"
    assert mw.permissions == ALL_PERMISSIONS
    assert mw.sending_headers() is None
    mw.require("ingest")


def test_disabled_installs_no_auth_machinery() -> None:
    assert AuthMiddlewareFactory(AuthSettings()).start_call(None, basic("alice", "x")) is None
    assert server_auth_options(AuthSettings()) == {}


def test_enabled_installs_the_handshake_and_the_middleware(settings: AuthSettings) -> None:
    options = server_auth_options(settings)
    assert isinstance(options["auth_handler"], NoOpAuthHandler)
    assert isinstance(options["middleware"][MIDDLEWARE_KEY], AuthMiddlewareFactory)


def test_missing_header(settings: AuthSettings) -> None:
    factory = AuthMiddlewareFactory(settings)
    cases: list[dict[str, list[str]]] = [{}, {"authorization": []}, {"user-agent": ["x"]}]
    for headers in cases:
        with pytest.raises(flight.FlightUnauthenticatedError, match="authentication required"):
            factory.start_call(None, headers)


def test_basic_issues_token_and_bearer_reuses_it(settings: AuthSettings) -> None:
    factory = AuthMiddlewareFactory(settings)
    mw = factory.start_call(None, basic("alice", ALICE_PW))
    assert (mw.user, mw.permissions) == ("alice", frozenset({"read", "ingest"}))
    token = issued_token(mw)
    assert len(token) >= 32

    again = factory.start_call(None, bearer(token))
    assert (again.user, again.permissions) == ("alice", frozenset({"read", "ingest"}))
    # Bearer calls don't mint new tokens.
    assert again.sending_headers() is None
    # Repeated Basic with the same credentials reuses the live session.
    assert issued_token(factory.start_call(None, basic("alice", ALICE_PW))) == token
    # Another user gets another token.
    assert issued_token(factory.start_call(None, basic("bob", BOB_PW))) != token


def test_scheme_is_case_insensitive(settings: AuthSettings) -> None:
    factory = AuthMiddlewareFactory(settings)
    encoded = base64.b64encode(f"alice:{ALICE_PW}".encode()).decode()
    token = issued_token(factory.start_call(None, {"authorization": [f"basic  {encoded}"]}))
    assert factory.start_call(None, {"authorization": [f"BEARER {token}"]}).user == "alice"


def test_unpadded_basic(settings: AuthSettings) -> None:
    factory = AuthMiddlewareFactory(settings)
    # "alice:" + password chosen so standard encoding needs padding.
    headers = basic("bob", BOB_PW, pad=False)
    assert "=" not in headers["authorization"][0]
    assert base64.b64encode(f"bob:{BOB_PW}".encode()).decode().endswith("=")
    assert factory.start_call(None, headers).user == "bob"


def test_password_with_colon() -> None:
    settings = AuthSettings(users={"u": User("u", hash_password("a:b:c", iterations=FAST))})
    assert AuthMiddlewareFactory(settings).start_call(None, basic("u", "a:b:c")).user == "u"


def test_wrong_password_message_has_no_secrets(settings: AuthSettings) -> None:
    factory = AuthMiddlewareFactory(settings)
    with pytest.raises(flight.FlightUnauthenticatedError) as exc:
        factory.start_call(None, basic("alice", "guessed-password"))
    message = str(exc.value)
    assert "invalid username or password" in message
    assert "guessed-password" not in message
    assert ALICE_PW not in message


def test_unknown_user_and_token_only_user(settings: AuthSettings) -> None:
    factory = AuthMiddlewareFactory(settings)
    for headers in (basic("mallory", ALICE_PW), basic("loader", ""), basic("", "")):
        with pytest.raises(flight.FlightUnauthenticatedError, match="invalid username or password"):
            factory.start_call(None, headers)


@pytest.mark.parametrize(
    "value",
    [
        "Basic",
        "Basic ",
        "Basic !!!notbase64!!!",
        "Basic a",  # impossible base64 length
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"alice:\xff\xfe").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b"\x80\x81:pw").decode(),
        "Bearer",
        "Bearer ",
        "Bearer nope",
        "Digest username=alice",
        STATIC_TOKEN,  # forgot the scheme
        "",
        "\x00\x01",
    ],
)
def test_garbage_headers(settings: AuthSettings, value: str) -> None:
    factory = AuthMiddlewareFactory(settings)
    with pytest.raises(flight.FlightUnauthenticatedError) as exc:
        factory.start_call(None, {"authorization": [value]})
    assert STATIC_TOKEN not in str(exc.value)


def test_binary_header_value_rejected(settings: AuthSettings) -> None:
    factory = AuthMiddlewareFactory(settings)
    with pytest.raises(flight.FlightUnauthenticatedError):
        factory.start_call(None, {"authorization": [b"Bearer " + STATIC_TOKEN.encode()]})


def test_static_token(settings: AuthSettings) -> None:
    factory = AuthMiddlewareFactory(settings)
    mw = factory.start_call(None, bearer(STATIC_TOKEN))
    assert (mw.user, mw.permissions) == ("loader", frozenset({"ingest"}))
    assert mw.sending_headers() is None
    with pytest.raises(flight.FlightUnauthenticatedError):
        factory.start_call(None, bearer(STATIC_TOKEN + "x"))


def test_session_expiry_and_sliding_renewal(settings: AuthSettings) -> None:
    clock = FakeClock()
    factory = AuthMiddlewareFactory(settings, clock=clock)
    token = issued_token(factory.start_call(None, basic("alice", ALICE_PW)))

    # Used within the TTL: renewed each time, so an active connection lives on.
    for _ in range(5):
        clock.now += 60
        assert factory.start_call(None, bearer(token)).user == "alice"

    clock.now += 101  # idle longer than token_ttl_seconds=100
    with pytest.raises(flight.FlightUnauthenticatedError, match="expired"):
        factory.start_call(None, bearer(token))
    # Stays dead.
    with pytest.raises(flight.FlightUnauthenticatedError):
        factory.start_call(None, bearer(token))

    # Logging in again mints a fresh token.
    new_token = issued_token(factory.start_call(None, basic("alice", ALICE_PW)))
    assert new_token != token
    assert factory.start_call(None, bearer(new_token)).user == "alice"


def test_expired_sessions_are_purged(settings: AuthSettings) -> None:
    clock = FakeClock()
    factory = AuthMiddlewareFactory(settings, clock=clock)
    factory.start_call(None, basic("alice", ALICE_PW))
    factory.start_call(None, basic("bob", BOB_PW))
    assert len(factory._sessions) == 2
    clock.now += 1000
    factory.start_call(None, basic("bob", BOB_PW))
    assert len(factory._sessions) == 1
    assert len(factory._session_for_credentials) == 1


def test_successful_verification_is_cached(settings: AuthSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_verify = auth.verify_password

    def counting_verify(password: str, stored: str) -> bool:
        calls.append(password)
        return real_verify(password, stored)

    monkeypatch.setattr(auth, "verify_password", counting_verify)
    factory = AuthMiddlewareFactory(settings)
    for _ in range(5):
        factory.start_call(None, basic("alice", ALICE_PW))
    assert calls == [ALICE_PW]
    # Failures are never cached: each wrong attempt pays for PBKDF2.
    for _ in range(2):
        with pytest.raises(flight.FlightUnauthenticatedError):
            factory.start_call(None, basic("alice", "wrong"))
    assert calls == [ALICE_PW, "wrong", "wrong"]
    # The cache does not hold the password itself.
    assert all(ALICE_PW not in repr(key) for key in factory._verified)


def test_concurrent_logins(settings: AuthSettings) -> None:
    factory = AuthMiddlewareFactory(settings)
    errors: list[BaseException] = []
    users: list[str] = []

    def worker() -> None:
        try:
            for _ in range(20):
                mw = factory.start_call(None, basic("alice", ALICE_PW))
                users.append(factory.start_call(None, bearer(issued_token(mw))).user)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert users == ["alice"] * 160


# ---------------------------------------------------------------------------
# Permissions and context lookup
# ---------------------------------------------------------------------------


def test_require() -> None:
    mw = AuthMiddleware("bob", {"read"})
    mw.require("read")
    with pytest.raises(flight.FlightUnauthorizedError, match="'ingest'") as exc:
        mw.require("ingest")
    assert "bob" in str(exc.value)


def test_middleware_repr_hides_token() -> None:
    mw = AuthMiddleware("alice", {"read"}, issued_token="sekrit-token")
    assert "sekrit-token" not in repr(mw)


class FakeContext:
    def __init__(self, middleware: object) -> None:
        self.middleware = middleware

    def get_middleware(self, key: str) -> object:
        assert key == MIDDLEWARE_KEY
        return self.middleware


def test_current_auth() -> None:
    anon = current_auth(FakeContext(None))
    assert (anon.user, anon.permissions) == ("anonymous", ALL_PERMISSIONS)
    mw = AuthMiddleware("bob", {"read"})
    assert current_auth(FakeContext(mw)) is mw
    with pytest.raises(TypeError):
        current_auth(FakeContext(object()))


# ---------------------------------------------------------------------------
# Bind check and TLS files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST", "localhost.", "::ffff:127.0.0.1"],
)
def test_bind_loopback_allowed_without_auth(host: str) -> None:
    check_bind_allowed(host, auth_enabled=False, insecure=False)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "", "10.0.0.5", "192.168.1.1", "example.com", "::ffff:10.0.0.1"]
)
def test_bind_exposed_requires_auth_or_insecure(host: str) -> None:
    with pytest.raises(ValueError, match=r"refusing to serve on .* without authentication.*--insecure"):
        check_bind_allowed(host, auth_enabled=False, insecure=False)
    check_bind_allowed(host, auth_enabled=True, insecure=False)
    check_bind_allowed(host, auth_enabled=False, insecure=True)


FAKE_CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
FAKE_KEY = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def test_tls_certificates(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes(FAKE_CERT)
    key.write_bytes(FAKE_KEY)
    assert tls_certificates(None, None) == []
    assert tls_certificates(str(cert), str(key)) == [(FAKE_CERT, FAKE_KEY)]
    with pytest.raises(ValueError, match="private key file is missing"):
        tls_certificates(str(cert), None)
    with pytest.raises(ValueError, match="certificate file is missing"):
        tls_certificates(None, str(key))
    with pytest.raises(ValueError, match="cannot read TLS private key file"):
        tls_certificates(str(cert), str(tmp_path / "nope.pem"))
    with pytest.raises(ValueError, match="not PEM"):
        tls_certificates(str(key), str(key))


# ---------------------------------------------------------------------------
# End to end over gRPC
# ---------------------------------------------------------------------------


class WhoAmIServer(flight.FlightServerBase):  # type: ignore[misc]
    """Answers with the authenticated user; the 'ingest' action needs ingest."""

    def __init__(self, settings: AuthSettings, **kwargs: Any) -> None:
        super().__init__("grpc://127.0.0.1:0", **server_auth_options(settings), **kwargs)
        self.seen: list[tuple[str, str]] = []

    def list_flights(self, context: flight.ServerCallContext, criteria: bytes) -> Iterator[flight.FlightInfo]:
        who = current_auth(context)
        who.require("read")
        self.seen.append(("list_flights", who.user))
        descriptor = flight.FlightDescriptor.for_path(who.user)
        yield flight.FlightInfo(pa.schema([]), descriptor, [])

    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        # ADBC's connect probes server metadata; record who asked.
        self.seen.append(("get_flight_info", current_auth(context).user))
        raise flight.FlightServerError("not a Flight SQL server")

    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> Iterator[bytes]:
        who = current_auth(context)
        who.require(action.type)
        self.seen.append((action.type, who.user))
        yield who.user.encode()


@pytest.fixture
def server(settings: AuthSettings) -> Iterator[WhoAmIServer]:
    srv = WhoAmIServer(settings)
    try:
        yield srv
    finally:
        srv.shutdown()


def whoami(client: flight.FlightClient, options: flight.FlightCallOptions | None = None) -> str:
    results = list(client.do_action(flight.Action("read", b""), options=options))
    return bytes(results[0].body.to_pybytes()).decode()


def test_e2e_pyarrow_basic_then_bearer(server: WhoAmIServer) -> None:
    with flight.connect(f"grpc://127.0.0.1:{server.port}") as client:
        name, value = client.authenticate_basic_token("alice", ALICE_PW)
        assert name == b"authorization"
        assert value.startswith(b"Bearer ")
        options = flight.FlightCallOptions(headers=[(name, value)])
        assert whoami(client, options) == "alice"
        assert [f.descriptor.path for f in client.list_flights(options=options)] == [[b"alice"]]
        list(client.do_action(flight.Action("ingest", b""), options=options))


def test_e2e_pyarrow_rejections(server: WhoAmIServer) -> None:
    with flight.connect(f"grpc://127.0.0.1:{server.port}") as client:
        with pytest.raises(flight.FlightUnauthenticatedError, match="invalid username or password"):
            client.authenticate_basic_token("alice", "wrong")
        with pytest.raises(flight.FlightUnauthenticatedError, match="authentication required"):
            whoami(client)
        with pytest.raises(flight.FlightUnauthenticatedError):
            whoami(client, flight.FlightCallOptions(headers=[(b"authorization", b"Bearer forged")]))

        name, value = client.authenticate_basic_token("bob", BOB_PW)
        options = flight.FlightCallOptions(headers=[(name, value)])
        assert whoami(client, options) == "bob"
        with pytest.raises(flight.FlightUnauthorizedError, match="'ingest'"):
            list(client.do_action(flight.Action("ingest", b""), options=options))

        # Static token for an ingest-only account: may ingest, may not read.
        static = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {STATIC_TOKEN}".encode())])
        list(client.do_action(flight.Action("ingest", b""), options=static))
        with pytest.raises(flight.FlightUnauthorizedError, match="'read'"):
            list(client.list_flights(options=static))


def test_e2e_no_auth_is_anonymous() -> None:
    srv = WhoAmIServer(AuthSettings())
    try:
        with flight.connect(f"grpc://127.0.0.1:{srv.port}") as client:
            assert whoami(client) == "anonymous"
            # Nothing to log in to: credentials are refused, and the connection goes on.
            with pytest.raises(NotImplementedError, match="authentication mechanism"):
                client.authenticate_basic_token("someone", "anything")
            assert whoami(client) == "anonymous"
    finally:
        srv.shutdown()


@pytest.mark.filterwarnings("ignore:Cannot disable autocommit")
def test_e2e_adbc_flightsql(server: WhoAmIServer) -> None:
    dbapi = pytest.importorskip("adbc_driver_flightsql.dbapi")
    import adbc_driver_manager

    uri = f"grpc://127.0.0.1:{server.port}"
    with pytest.raises(adbc_driver_manager.Error) as exc:
        dbapi.connect(uri, db_kwargs={"username": "alice", "password": "wrong"})
    assert "UNAUTHENTICATED" in str(exc.value)
    assert "invalid username or password" in str(exc.value)
    assert server.seen == []

    # The handshake succeeds; whatever fails afterwards (this is not a Flight
    # SQL server) must happen as alice, i.e. with the bearer the driver took
    # from the handshake response.
    try:
        conn = dbapi.connect(uri, db_kwargs={"username": "alice", "password": ALICE_PW})
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        finally:
            conn.close()
    except adbc_driver_manager.Error as err:
        assert "UNAUTHENTICATED" not in str(err)
    assert server.seen
    assert {user for _, user in server.seen} == {"alice"}


@pytest.mark.subprocess  # openssl makes the certificate
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_e2e_tls(tmp_path: Path, settings: AuthSettings) -> None:
    cert, key = self_signed_cert(tmp_path)
    srv = flight.FlightServerBase(
        "grpc+tls://127.0.0.1:0",
        tls_certificates=tls_certificates(str(cert), str(key)),
        auth_handler=NoOpAuthHandler(),
        middleware={MIDDLEWARE_KEY: AuthMiddlewareFactory(settings)},
    )
    try:
        with flight.connect(f"grpc+tls://localhost:{srv.port}", tls_root_certs=cert.read_bytes()) as client:
            _, value = client.authenticate_basic_token("alice", ALICE_PW)
            assert value.startswith(b"Bearer ")
    finally:
        srv.shutdown()
