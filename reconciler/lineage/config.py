"""Where OpenLineage events go: the daemon config's `openlineage:` section or the environment.

Kept apart from `openlineage.py` (the openlineage-python client and requests, ~30 MB and 0.2 s to
import): the daemon reads its configuration at start, and emits only when lineage is configured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from reconciler.core.diagnostics import UserError

TRANSPORTS = ("http", "file", "none")
DEFAULT_ENDPOINT = "api/v1/lineage"
MAX_TIMEOUT = 60.0


@dataclass
class OpenLineageConfig:
    transport: str  # "http" | "file" | "none"
    url: str | None = None  # http: base URL, e.g. http://127.0.0.1:5000
    path: str | None = None  # file: JSON lines are appended here
    namespace: str = "reconciler"  # the OpenLineage job namespace
    api_key: str | None = None  # http: sent as "Authorization: Bearer <api_key>"
    timeout: float = 5.0  # http: seconds per request (connect and read)
    endpoint: str = DEFAULT_ENDPOINT  # http: path joined to `url`

    def __repr__(self) -> str:  # keep the api key out of logs and tracebacks
        key = "***" if self.api_key else None
        return (f"OpenLineageConfig(transport={self.transport!r}, url={self.url!r}, path={self.path!r}, "
                f"namespace={self.namespace!r}, api_key={key!r}, timeout={self.timeout!r}, "
                f"endpoint={self.endpoint!r})")


_CONFIG_KEYS = ("transport", "url", "path", "namespace", "api_key", "api_key_file", "timeout", "endpoint")
_ENV = {
    "url": "RECONCILER_OPENLINEAGE_URL",
    "path": "RECONCILER_OPENLINEAGE_FILE",
    "namespace": "RECONCILER_OPENLINEAGE_NAMESPACE",
    "api_key": "RECONCILER_OPENLINEAGE_API_KEY",
    "timeout": "RECONCILER_OPENLINEAGE_TIMEOUT",
    "endpoint": "RECONCILER_OPENLINEAGE_ENDPOINT",
}


def config_from_dict(d: dict | None) -> OpenLineageConfig:
    """The daemon config's `openlineage:` section; None or {} means no lineage."""
    if d is None:
        return OpenLineageConfig("none")
    if not isinstance(d, dict):
        raise UserError(f"openlineage: expected a mapping, got {type(d).__name__}",
                        hint="write openlineage: {transport: http, url: http://HOST:PORT} "
                             "or {transport: file, path: FILE}")
    for key in d:
        if key not in _CONFIG_KEYS:
            raise UserError(f"openlineage.{key}: unknown key",
                            hint=f"known keys: {', '.join(_CONFIG_KEYS)}")
    values = dict(d)
    if "api_key_file" in values:
        values["api_key"] = _read_key_file(values.pop("api_key_file"))
    if not values:
        return OpenLineageConfig("none")
    return _build(values, {k: f"openlineage.{k}" for k in _CONFIG_KEYS})


def config_from_env(environ: Mapping[str, str]) -> OpenLineageConfig:
    """RECONCILER_OPENLINEAGE_URL (http) or RECONCILER_OPENLINEAGE_FILE (file); neither means none.

    Optional: RECONCILER_OPENLINEAGE_NAMESPACE, _API_KEY, _TIMEOUT, _ENDPOINT.
    """
    values: dict[str, Any] = {k: environ[name] for k, name in _ENV.items() if environ.get(name)}
    if "url" in values and "path" in values:
        raise UserError(f"{_ENV['url']} and {_ENV['path']} are both set",
                        hint="set one: the URL sends events over HTTP, the file collects them locally")
    if "url" not in values and "path" not in values:
        return OpenLineageConfig("none")
    values["transport"] = "http" if "url" in values else "file"
    return _build(values, {**_ENV, "transport": _ENV["url"] if "url" in values else _ENV["path"]})


def _build(values: dict, label: dict[str, str]) -> OpenLineageConfig:
    """Validate `values` (already only known keys); `label` names each key in messages."""
    transport = values.get("transport")
    if transport is None:  # infer it from what was given, so {url: ...} alone works
        transport = "http" if values.get("url") else "file" if values.get("path") else None
    if transport not in TRANSPORTS:
        raise UserError(f"{label['transport']}: must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    url = _opt_str(values, "url", label)
    path = _opt_str(values, "path", label)
    namespace = _opt_str(values, "namespace", label) or "reconciler"
    api_key = _opt_str(values, "api_key", label)
    endpoint = _opt_str(values, "endpoint", label) or DEFAULT_ENDPOINT
    timeout = _timeout(values.get("timeout", 5.0), label["timeout"])
    if transport == "http":
        if not url:
            raise UserError(f"{label['url']}: required when transport is http",
                            hint="for example url: http://127.0.0.1:5000 (events go to URL/api/v1/lineage)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UserError(f"{label['url']}: {url!r} is not an http:// or https:// URL")
        if path:
            raise UserError(f"{label['path']}: only used with transport: file")
    if transport == "file":
        if not path:
            raise UserError(f"{label['path']}: required when transport is file",
                            hint="for example path: /var/lib/reconciler/openlineage.jsonl")
        if "://" in path and not path.startswith("file://"):
            raise UserError(f"{label['path']}: {path!r} is not a local file path")
        if url:
            raise UserError(f"{label['url']}: only used with transport: http")
    return OpenLineageConfig(transport, url=url, path=path, namespace=namespace, api_key=api_key,
                             timeout=timeout, endpoint=endpoint)


def _opt_str(values: dict, key: str, label: dict[str, str]) -> str | None:
    value = values.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{label[key]}: expected a non-empty string, got {value!r}")
    return value.strip()


def _timeout(value: Any, label: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        seconds = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{label}: expected a number of seconds, got {value!r}") from None
    if not (0 < seconds <= MAX_TIMEOUT) or math.isnan(seconds):
        raise UserError(f"{label}: must be more than 0 and at most {MAX_TIMEOUT:g} seconds, got {value!r}",
                        hint="lineage must never hold a run up for long")
    return seconds


def _read_key_file(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"openlineage.api_key_file: expected a file path, got {value!r}")
    try:
        key = Path(value).expanduser().read_text(encoding="utf-8").strip()
    except OSError as e:
        raise UserError(f"openlineage.api_key_file: cannot read {value}: {e.strerror or e}") from None
    if not key:
        raise UserError(f"openlineage.api_key_file: {value} is empty")
    return key
