"""Password hashes for configured users: PBKDF2-SHA256 in a self-describing string."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

HASH_ALGORITHM = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000
_SALT_BYTES = 16
_KEY_BYTES = 32
# Guards against a typo such as 6_000_000_000 turning every login into a
# multi-hour computation.
_MAX_ITERATIONS = 100_000_000


# ---------------------------------------------------------------------------
# Password hashing
# ---------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode_lenient(text: str) -> bytes:
    """Decode standard or URL-safe base64, with or without padding.

    Go's ``base64.RawStdEncoding`` (and hand-written hashes) omit padding;
    Python's decoder insists on it.
    """
    text = text.strip()
    if len(text) % 4 == 1:
        raise binascii.Error("invalid base64 length")
    padded = text + "=" * (-len(text) % 4)
    if "-" in padded or "_" in padded:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    return base64.b64decode(padded.encode("ascii"), validate=True)


@dataclass(frozen=True)
class _ParsedHash:
    iterations: int
    salt: bytes
    digest: bytes


def parse_hash(stored: str) -> _ParsedHash:
    """Split ``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>``.

    Raises ValueError with a terse reason; callers add the context.
    """
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != HASH_ALGORITHM:
        raise ValueError(f"expected {HASH_ALGORITHM}$<iterations>$<salt>$<hash>")
    _, iterations_text, salt_text, digest_text = parts
    if not iterations_text.isdigit():
        raise ValueError("iteration count is not a number")
    iterations = int(iterations_text)
    if not 1 <= iterations <= _MAX_ITERATIONS:
        raise ValueError(f"iteration count must be between 1 and {_MAX_ITERATIONS}")
    try:
        salt = b64decode_lenient(salt_text)
        digest = b64decode_lenient(digest_text)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("salt or hash is not valid base64") from exc
    if not salt or not digest:
        raise ValueError("salt or hash is empty")
    return _ParsedHash(iterations, salt, digest)


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    """Return ``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` for *password*."""
    if not 1 <= iterations <= _MAX_ITERATIONS:
        raise ValueError(f"iterations must be between 1 and {_MAX_ITERATIONS}")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, _KEY_BYTES)
    return f"{HASH_ALGORITHM}${iterations}${_b64encode(salt)}${_b64encode(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Check *password* against a hash from :func:`hash_password`.

    A malformed *stored* value verifies nothing (returns False) rather than
    raising, so a bad hash can never turn into a login bypass; configuration
    loading rejects malformed hashes up front with a helpful message.
    """
    try:
        parsed = parse_hash(stored)
    except ValueError:
        return False
    candidate = hashlib.pbkdf2_hmac(
        "sha256",
        password.encode("utf-8"),
        parsed.salt,
        parsed.iterations,
        len(parsed.digest),
    )
    return hmac.compare_digest(candidate, parsed.digest)
