"""Probing a service the way its consumers reach it: an HTTP GET of its health route.

The daemon probes its own listen address before it evaluates availability SLOs, so a
service counts as available only when the real HTTP route answered 200 (a 404 because the
service is not served, a 503 because its datasets cannot be read, or no answer at all are
all failures). No token is sent: the health route is open, and the probe must not see more
than an anonymous consumer would.
"""
from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

from reconciler.core.ids import split_id

TIMEOUT = 5.0
MAX_DETAIL = 300


def health_url(base_url: str, service_id: str) -> str:
    """http://HOST:PORT/api/v1/services/WS/NAME/health for service:WS/NAME."""
    _, workspace, name = split_id(service_id)
    quote = urllib.parse.quote
    return f"{base_url.rstrip('/')}/api/v1/services/{quote(workspace or 'public', safe='')}/{quote(name, safe='')}/health"


def probe_service(base_url: str, service_id: str, timeout: float = TIMEOUT, now: datetime | None = None) -> dict:
    """One service_checks row: {service_id, at, ok, status, detail}; ok means HTTP 200."""
    at = now or datetime.now(timezone.utc)
    url = health_url(base_url, service_id)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as answer:
            status, body = answer.status, answer.read(MAX_DETAIL)
    except urllib.error.HTTPError as e:
        status, body = e.code, _read(e)
    except (OSError, ValueError) as e:  # refused, timed out, unreachable
        reason = getattr(e, "reason", None) or e
        return {"service_id": service_id, "at": at, "ok": False, "status": None,
                "detail": f"no answer from {url}: {reason}"[:MAX_DETAIL]}
    text = body.decode("utf-8", errors="replace").strip()
    detail = f"HTTP {status}" + (f": {text}" if text and status != 200 else "")
    return {"service_id": service_id, "at": at, "ok": status == 200, "status": status, "detail": detail[:MAX_DETAIL]}


def _read(e: urllib.error.HTTPError) -> bytes:
    try:
        return e.read(MAX_DETAIL)
    except OSError:
        return b""
