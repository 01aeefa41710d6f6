"""Transport security: TLS certificates, and the refusal to serve beyond loopback unauthenticated."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from tierflight.core.errors import AuthConfigError

# ---------------------------------------------------------------------------
# Transport security
# ---------------------------------------------------------------------------


def tls_certificates(cert_file: str | None, key_file: str | None) -> list[tuple[bytes, bytes]]:
    """Read a PEM certificate chain and key for ``FlightServerBase(tls_certificates=...)``.

    Returns an empty list when neither file is given (plain gRPC).
    """
    if cert_file is None and key_file is None:
        return []
    if cert_file is None or key_file is None:
        missing = "certificate" if cert_file is None else "private key"
        raise AuthConfigError(
            f"TLS needs both a certificate and a private key file; the {missing} "
            "file is missing (set both tls cert and key, or neither)"
        )
    cert = _read_pem(cert_file, "certificate", b"CERTIFICATE")
    key = _read_pem(key_file, "private key", b"PRIVATE KEY")
    return [(cert, key)]


def _read_pem(path: str, what: str, marker: bytes) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"cannot read TLS {what} file {path!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data or marker not in data:
        raise AuthConfigError(
            f"TLS {what} file {path!r} is not PEM (expected a '-----BEGIN ...{marker.decode()}-----' block)"
        )
    return data


def _is_loopback(host: str) -> bool:
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        # Other host names could resolve anywhere; treat them as exposed.
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_bind_allowed(host: str, auth_enabled: bool, insecure: bool) -> None:
    """Refuse to listen beyond loopback without authentication.

    ``0.0.0.0``, ``::`` and the empty host bind every interface and count as
    non-loopback; so does any host name other than ``localhost``.
    """
    if auth_enabled or insecure or _is_loopback(host):
        return
    raise AuthConfigError(
        f"refusing to serve on {host} without authentication; configure "
        "[auth] users or tokens, or pass --insecure"
    )
