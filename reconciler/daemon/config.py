"""reconciler.yaml, the daemon's configuration (SPEC.md section 4), and reading the secrets it names.

`load_config` reads the file with the artefact YAML loader (libyaml, duplicate keys are errors), lets CLI
flags of the same names override it, validates the result with `DaemonConfig` and turns every problem into
one `UserError` whose diagnostics name the file, the line, the dotted key and what to do.

Token values never reach messages or reprs: the config holds file paths and variable names, not tokens
(the one exception, openlineage.api_key, is masked by OpenLineageConfig's own repr).
"""
from __future__ import annotations

import difflib
import fnmatch
import os
import re
from pathlib import Path
from typing import Annotated, Any, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from reconciler.core.diagnostics import Diagnostic, UserError, error
from reconciler.core.resources import parse_duration
from reconciler.core.yamlload import compose_documents, parse_file
from reconciler.lineage.config import _CONFIG_KEYS as _OPENLINEAGE_KEYS  # its known keys, for did-you-mean
from reconciler.lineage.config import OpenLineageConfig, config_from_dict

DEFAULT_HOST = "127.0.0.1"  # loopback unless the operator asks for more
DEFAULT_LISTEN = f"{DEFAULT_HOST}:8080"
DEFAULT_STATE_DIR = ".reconciler"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCP_REMOTE = re.compile(r"^[\w.-]+@[\w.-]+:")  # git@host:path, an ssh remote without a scheme
_OPENLINEAGE_KEY = re.compile(r"^(openlineage(?:\.[A-Za-z_]+)?): (.*)$", re.S)
SPEC_HINT = "the keys are described in SPEC.md section 4 (the daemon)"


# ---------------------------------------------------------------------------- field checks

def _duration(value: Any, zero: bool = False) -> float:
    if not isinstance(value, (str, int, float)):  # parse_duration is cached: only hashable input
        raise ValueError(f'expected a duration such as "30s", got a {type(value).__name__}')
    seconds = parse_duration(value)
    if seconds < 0 or seconds == 0 and not zero:
        raise ValueError('must be more than 0, e.g. "30s" or "5m"' if not zero else 'must be 0 or more, e.g. "60s"')
    return seconds


def _path(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("expected a file path, got an empty string")
        return Path(value).expanduser()
    return value


def _duration_or_zero(value: Any) -> float:
    return _duration(value, zero=True)


Duration = Annotated[float, BeforeValidator(_duration)]
DurationOrZero = Annotated[float, BeforeValidator(_duration_or_zero)]
FilePath = Annotated[Path, BeforeValidator(_path)]


def _branch_name(value: str) -> str:
    if not value or value != value.strip() or any(c.isspace() for c in value) or ".." in value \
            or value.startswith(("-", "/")) or value.endswith(("/", ".lock")):
        raise ValueError("must be a git branch name such as main or release/2024 (no spaces, '..' or "
                         "leading '-')")
    return value


def parse_listen(value: str) -> tuple[str, int]:
    """("host", port) of "host:port", "[v6]:port" or ":port" (loopback); raises ValueError."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep:
        raise ValueError(f"{value!r} is not HOST:PORT; write e.g. 127.0.0.1:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number from 0 to 65535 (0 picks a free port)")
    return host or DEFAULT_HOST, int(port_text)


# ---------------------------------------------------------------------------- the model

class UserConfig(BaseModel):
    """An API user: the groups it belongs to and where its bearer token is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: list[str] = Field(default_factory=list)
    token_file: FilePath | None = None
    token_env: str | None = None  # the name of an environment variable, never the token

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        if any(not g.strip() for g in value):
            raise ValueError("group names must not be empty")
        return value

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME_RE.match(value):  # the value is not echoed: it may be a token
            raise ValueError("must name an environment variable (letters, digits and _), not hold the token")
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> "UserConfig":
        if (self.token_file is None) == (self.token_env is None):
            raise ValueError("give exactly one of token_file or token_env")
        return self


class GroupConfig(BaseModel):
    """A group of users; `admin: true` members may read every dataset that no policy denies them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    admin: bool = Field(False, strict=True)
    description: str | None = None


class DaemonConfig(BaseModel):
    """reconciler.yaml, validated; durations are seconds, paths are absolute when read from a file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo: str
    branch: str = "main"
    paths: list[str] = Field(default_factory=lambda: ["."])
    interval: Duration = 30.0
    state_dir: FilePath = Path(DEFAULT_STATE_DIR)
    status_branch: str = "reconciler/status"
    preview_branches: list[str] = Field(default_factory=lambda: ["*"])
    max_prune: int = Field(10, ge=0, strict=True)
    self_heal: bool = Field(False, strict=True)
    listen: str = DEFAULT_LISTEN
    api_token_file: FilePath | None = None
    webhook_secret_file: FilePath | None = None
    openlineage: OpenLineageConfig = Field(default_factory=lambda: OpenLineageConfig("none"))
    users: dict[str, UserConfig] = Field(default_factory=dict)
    groups: dict[str, GroupConfig] = Field(default_factory=dict)
    drift_interval: Duration = 300.0
    slo_interval: Duration = 60.0  # how often data products' SLOs are evaluated (also after every reconcile)
    # how long the lake stays open for writing after a workflow run (0: closed at once). Faster runs (no open
    # and close of a lake of thousands of tables), more memory (DuckDB keeps its catalog: ~100 MB at 7,000 tables)
    lake_hold: DurationOrZero = 0.0

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected a git URL or a local path, got an empty string")
        return value.strip()

    @field_validator("branch", "status_branch")
    @classmethod
    def _branches(cls, value: str) -> str:
        return _branch_name(value)

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('list at least one folder of the repository, e.g. ["."]')
        for p in value:
            if not p.strip() or p.startswith("/") or ".." in Path(p).parts:
                raise ValueError(f"{p!r} must be a folder inside the repository (relative, no '..')")
        return value

    @field_validator("preview_branches")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        if any(not p.strip() for p in value):
            raise ValueError('patterns must not be empty; use ["*"] for every branch or [] for none')
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, port = parse_listen(value)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @field_validator("openlineage", mode="plain")
    @classmethod
    def _openlineage(cls, value: Any) -> OpenLineageConfig:
        if isinstance(value, OpenLineageConfig):
            return value
        try:
            return config_from_dict(value)
        except UserError as e:  # pydantic only collects ValueError-like errors: carry message and hint over
            raise PydanticCustomError("openlineage", "{message}", {"message": e.message, "hint": e.hint or ""})

    @model_validator(mode="after")
    def _status_elsewhere(self) -> "DaemonConfig":
        if self.status_branch == self.branch:  # status commits must never land on the tracked branch
            raise PydanticCustomError("status_branch", "status_branch must differ from branch ({branch})",
                                      {"branch": self.branch})
        return self

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]

    def wants_preview(self, branch: str) -> bool:
        """Whether a plan preview is kept for `branch` (never for the tracked or the status branch)."""
        if branch in (self.branch, self.status_branch):
            return False
        return any(fnmatch.fnmatchcase(branch, pattern) for pattern in self.preview_branches)


# ---------------------------------------------------------------------------- loading

def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> DaemonConfig:
    """The daemon config from the YAML file at `path` (None: flags only), `overrides` (CLI flags of the
    same names; None values are ignored) taking precedence. Raises UserError for any problem."""
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key in flags:
        if key not in DaemonConfig.model_fields:
            raise UserError(f"unknown daemon option {key!r}{_did_you_mean(key, DaemonConfig.model_fields)}",
                            hint=SPEC_HINT)
    label: str | None = None
    root = None
    raw: dict = {}
    if path is not None:
        path = Path(path).expanduser()
        label = str(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read the daemon config {label}: {e.strerror or e}",
                            hint="pass --config naming an existing reconciler.yaml, or give the settings "
                                 "as flags") from None
        raw, root = _parse(label, data)
        raw.setdefault("state_dir", DEFAULT_STATE_DIR)  # the default, too, lives next to the file
        raw = _resolve_paths(raw, path.parent.resolve())
    try:
        return DaemonConfig.model_validate({**raw, **flags})
    except ValidationError as exc:
        diags = [_diagnostic(e, label, root, flags) for e in exc.errors(include_url=False, include_input=False)]
        diags.sort(key=Diagnostic.sort_key)
        where = label or "the daemon flags"
        raise UserError(f"{where}: the daemon config is not valid "
                        f"({len(diags)} problem{'s' if len(diags) != 1 else ''})",
                        diagnostics=diags, hint=SPEC_HINT) from None


def _parse(label: str, data: bytes) -> tuple[dict, Any]:
    """(plain data, node tree for locating keys) of the one mapping in the file."""
    result = parse_file(label, data, blob_id="")
    if result.diagnostics:
        raise UserError(f"{label} is not valid YAML", diagnostics=result.diagnostics,
                        hint="fix the YAML at the line shown, then start the daemon again")
    nodes = compose_documents(data)
    if not nodes:
        return {}, None
    if len(nodes) > 1:
        mark = nodes[1].start_mark
        raise UserError(f"{label} holds {len(nodes)} YAML documents",
                        [error("the daemon config is one mapping; remove the extra documents ('---')",
                               label, mark.line + 1, mark.column + 1)], hint=SPEC_HINT)
    if not isinstance(nodes[0], MappingNode):
        mark = nodes[0].start_mark
        raise UserError(f"{label}: expected a mapping of settings",
                        [error("the top level must be keys such as repo: and branch:", label,
                               mark.line + 1, mark.column + 1)], hint=SPEC_HINT)
    return result.documents[0].data, nodes[0]


def _under(base: Path, value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        return value  # the model reports it
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def _resolve_paths(raw: dict, base: Path) -> dict:
    """Relative paths in the file mean "next to the file", wherever the daemon was started from."""
    raw = dict(raw)
    for key in ("state_dir", "api_token_file", "webhook_secret_file"):
        if key in raw:
            raw[key] = _under(base, raw[key])
    repo = raw.get("repo")
    if isinstance(repo, str) and "://" not in repo and not _SCP_REMOTE.match(repo):
        raw["repo"] = _under(base, repo)
    if isinstance(raw.get("users"), dict):
        raw["users"] = {name: ({**u, "token_file": _under(base, u["token_file"])}
                               if isinstance(u, dict) and "token_file" in u else u)
                        for name, u in raw["users"].items()}
    lineage = raw.get("openlineage")
    if isinstance(lineage, dict):
        lineage = dict(lineage)
        if "api_key_file" in lineage:
            lineage["api_key_file"] = _under(base, lineage["api_key_file"])
        if isinstance(lineage.get("path"), str) and "://" not in lineage["path"]:
            lineage["path"] = _under(base, lineage["path"])
        raw["openlineage"] = lineage
    return raw


def _did_you_mean(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _known_keys(parent: tuple) -> list[str]:
    if parent == ():
        return list(DaemonConfig.model_fields)
    if len(parent) == 2 and parent[0] == "users":
        return list(UserConfig.model_fields)
    if len(parent) == 2 and parent[0] == "groups":
        return list(GroupConfig.model_fields)
    if parent == ("openlineage",):
        return list(_OPENLINEAGE_KEYS)
    return []


def _diagnostic(err: dict, label: str | None, root, flags: Mapping[str, Any]) -> Diagnostic:
    loc = tuple(err["loc"])
    kind = err["type"]
    hint: str | None = None
    if kind == "openlineage":  # config_from_dict names the key in its message: "openlineage.url: ..."
        match = _OPENLINEAGE_KEY.match(err["ctx"]["message"])
        text = match.group(2) if match else err["ctx"]["message"]
        loc = tuple(match.group(1).split(".")) if match else loc
        hint = err["ctx"]["hint"] or None
        if text == "unknown key":
            text += _did_you_mean(loc[-1], _OPENLINEAGE_KEYS)
    elif kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        text = "unknown key" + _did_you_mean(str(loc[-1]), known)
        hint = f"known keys here: {', '.join(known)}" if known else SPEC_HINT
    elif kind == "missing":
        text = "required"
        if loc == ("repo",):
            hint = "add `repo: URL-or-path` to the config file, or pass --repo"
    else:
        text = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    key = ".".join(str(part) for part in loc) or "(top level)"
    if loc and loc[0] in flags:  # the value came from a flag, not from the file
        flag = "--" + str(loc[0]).replace("_", "-")
        return error(f"{key} (from {flag}): {text}", hint=hint)
    place = _locate(root, loc) if root is not None else None
    line, col = place if place else (None, None)
    return error(f"{key}: {text}", label, line, col, hint=hint)


def _locate(root, loc: tuple) -> tuple[int, int] | None:
    """Line and column (1-based) of the deepest node of `loc` found in the file (a key's own position)."""
    node, mark = root, None
    for step in loc:
        child = None
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and key_node.value == str(step):
                    mark, child = key_node.start_mark, value_node
                    break
        elif isinstance(node, SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            child = node.value[step]
            mark = child.start_mark
        if child is None:
            break
        node = child
    if mark is None:
        return None
    return mark.line + 1, mark.column + 1


# ---------------------------------------------------------------------------- secrets

def read_secret_file(path: Path | str) -> str:
    """The token in `path`, without one trailing newline. The content never appears in errors."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"secret file {path} does not exist",
                        hint="create it holding the token on one line, or fix the path in the config") from None
    except UnicodeDecodeError:
        raise UserError(f"secret file {path} is not UTF-8 text", hint="write the token as plain text") from None
    except OSError as e:
        raise UserError(f"cannot read secret file {path}: {e.strerror or type(e).__name__}",
                        hint="check that the daemon's user may read it") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        raise UserError(f"secret file {path} is empty", hint="write the token into it on one line")
    return text


def read_user_token(name: str, user: UserConfig, environ: Mapping[str, str] | None = None) -> str:
    """User `name`'s bearer token, from its token_file or its token_env variable."""
    if user.token_file is not None:
        return read_secret_file(user.token_file)
    env = os.environ if environ is None else environ
    value = env.get(user.token_env or "", "")
    if not value.strip():
        raise UserError(f"users.{name}.token_env: environment variable {user.token_env} is not set or empty",
                        hint=f"export {user.token_env}=TOKEN before starting the daemon")
    return value
