"""Operations: Prometheus metrics, the /metrics, /healthz and /readyz endpoints, readiness."""

from __future__ import annotations

from tierflight.observability.health import readiness
from tierflight.observability.httpd import OpsServer
from tierflight.observability.metrics import Metrics

__all__ = ["Metrics", "OpsServer", "readiness"]
