"""Identity on a worker: the front authenticated the caller and says who it is.

A worker listens on a Unix socket in a directory only the server's OS user can enter, so
the only peer is the front; these headers are not accepted on a network port.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow.flight as flight

from tierflight.protocol.auth import AuthMiddleware

USER_HEADER = "x-tierflight-user"
PERMISSIONS_HEADER = "x-tierflight-permissions"


def identity_headers(auth: AuthMiddleware) -> list[tuple[bytes, bytes]]:
    return [
        (USER_HEADER.encode(), auth.user.encode()),
        (PERMISSIONS_HEADER.encode(), ",".join(sorted(auth.permissions)).encode()),
    ]


def _header(headers: Mapping[str, list[Any]], name: str) -> str | None:
    values = headers.get(name)
    if not values:
        return None
    value = values[0]
    return value.decode() if isinstance(value, bytes) else str(value)


class FrontIdentityFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc, unused-ignore]
    def start_call(self, info: Any, headers: Mapping[str, list[Any]]) -> AuthMiddleware | None:
        user = _header(headers, USER_HEADER)
        if user is None:
            # The supervisor's own calls (readiness, data state) carry no identity: handlers
            # read the missing middleware as the anonymous caller.
            return None
        perms = _header(headers, PERMISSIONS_HEADER) or ""
        return AuthMiddleware(user, [p for p in perms.split(",") if p])
