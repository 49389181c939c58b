"""reconciler.yaml: a full config, defaults, durations, listen, errors that name file, key and line,
flag overrides, paths relative to the file, and secrets that never leak into messages."""
from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.diagnostics import UserError
from reconciler.daemon.config import (
    DaemonConfig,
    UserConfig,
    load_config,
    read_secret_file,
    read_user_token,
)

SECRET = "s3cr3t-t0ken-value-do-not-print"


def write(tmp_path: Path, text: str, name: str = "reconciler.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(e: UserError) -> list[str]:
    return [d.render() for d in e.diagnostics]


def everything(e: UserError) -> str:
    return "\n".join([e.message, e.hint or "", *problems(e), repr(e)])


FULL = """\
repo: https://git.example.com/data/platform.git
branch: main
paths: [".", "products"]
interval: 45s
state_dir: /var/lib/reconciler
status_branch: reconciler/status
preview_branches: ["feature/*", "fix-*"]
max_prune: 3
self_heal: true
listen: 0.0.0.0:9090
api_token_file: /etc/reconciler/api-token
webhook_secret_file: /etc/reconciler/webhook-secret
openlineage: {transport: http, url: http://127.0.0.1:5000}
users:
  alice: {groups: [eu-analysts], token_file: /etc/reconciler/tokens/alice}
  bob: {groups: [], token_env: BOB_TOKEN}
groups:
  eu-analysts: {description: EU analysts}
  platform: {admin: true}
drift_interval: 1h30m
"""


def test_a_full_config_is_read_with_every_key(tmp_path):
    c = load_config(write(tmp_path, FULL), {})
    assert c.repo == "https://git.example.com/data/platform.git"
    assert c.branch == "main" and c.paths == [".", "products"]
    assert c.interval == 45.0 and c.drift_interval == 5400.0
    assert c.state_dir == Path("/var/lib/reconciler")
    assert c.status_branch == "reconciler/status"
    assert c.preview_branches == ["feature/*", "fix-*"]
    assert c.max_prune == 3 and c.self_heal is True
    assert (c.host, c.port) == ("0.0.0.0", 9090)
    assert c.api_token_file == Path("/etc/reconciler/api-token")
    assert c.webhook_secret_file == Path("/etc/reconciler/webhook-secret")
    assert c.openlineage.transport == "http" and c.openlineage.url == "http://127.0.0.1:5000"
    assert c.users["alice"] == UserConfig(groups=["eu-analysts"], token_file=Path("/etc/reconciler/tokens/alice"))
    assert c.users["bob"].token_env == "BOB_TOKEN" and c.users["bob"].token_file is None
    assert c.groups["eu-analysts"].description == "EU analysts" and not c.groups["eu-analysts"].admin
    assert c.groups["platform"].admin
    assert c.wants_preview("feature/x") and c.wants_preview("fix-1")
    assert not c.wants_preview("other") and not c.wants_preview("main")


def test_defaults_bind_to_loopback_and_need_only_a_repo(tmp_path):
    c = load_config(write(tmp_path, "repo: https://git.example.com/x.git\n"), {})
    assert c.branch == "main" and c.paths == ["."]
    assert c.interval == 30.0 and c.drift_interval == 300.0
    assert c.state_dir == tmp_path.resolve() / ".reconciler"
    assert c.status_branch == "reconciler/status" and c.preview_branches == ["*"]
    assert c.max_prune == 10 and c.self_heal is False
    assert c.listen == "127.0.0.1:8080" and c.host == "127.0.0.1"
    assert c.api_token_file is None and c.webhook_secret_file is None
    assert c.openlineage.transport == "none"
    assert c.users == {} and c.groups == {}
    assert not c.wants_preview("reconciler/status")


def test_repo_is_required_from_the_file_or_a_flag(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "branch: main\n"), {})
    assert any("repo: required" in p and "--repo" in p for p in problems(e.value))
    assert load_config(None, {"repo": "/srv/repo"}).repo == "/srv/repo"


@pytest.mark.parametrize("text, seconds", [("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("500ms", 0.5),
                                           (12, 12.0)])
def test_durations_are_seconds(tmp_path, text, seconds):
    c = load_config(write(tmp_path, f"repo: r\ninterval: {text!r}\ndrift_interval: {text!r}\n"), {})
    assert c.interval == seconds and c.drift_interval == seconds


@pytest.mark.parametrize("text, seconds", [("0s", 0.0), ("0m", 0.0), (0, 0.0), ("60s", 60.0)])
def test_lake_hold_may_be_zero(tmp_path, text, seconds):
    assert load_config(write(tmp_path, f"repo: r\nlake_hold: {text!r}\n"), {}).lake_hold == seconds
    assert load_config(write(tmp_path, "repo: r\n"), {}).lake_hold == 0.0


@pytest.mark.parametrize("text", ["soon", "-5s", "[1]"])
def test_a_bad_lake_hold_is_refused_at_its_line(tmp_path, text):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, f"repo: r\nlake_hold: {text}\n"), {})
    [d] = e.value.diagnostics
    assert d.line == 2 and d.message.startswith("lake_hold: ")


@pytest.mark.parametrize("text", ["0s", "soon", "-5", "[1]"])
def test_a_bad_or_zero_interval_is_refused_at_its_line(tmp_path, text):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, f"repo: r\n\ninterval: {text}\n"), {})
    [d] = e.value.diagnostics
    assert d.line == 3 and d.message.startswith("interval: ")
    assert d.file == str(tmp_path / "reconciler.yaml")


@pytest.mark.parametrize("listen", ["127.0.0.1:99999", "127.0.0.1:http", "127.0.0.1", "::1:80"])
def test_a_bad_listen_address_is_refused(tmp_path, listen):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, f"repo: r\nlisten: '{listen}'\n"), {})
    [d] = e.value.diagnostics
    assert d.line == 2 and d.message.startswith("listen: ")


@pytest.mark.parametrize("listen, host, port", [(":8081", "127.0.0.1", 8081), ("[::1]:80", "::1", 80),
                                                ("localhost:0", "localhost", 0)])
def test_listen_forms(listen, host, port):
    c = DaemonConfig(repo="r", listen=listen)
    assert (c.host, c.port) == (host, port)


def test_an_unknown_key_names_the_file_the_dotted_key_a_guess_and_the_line(tmp_path):
    path = write(tmp_path, "repo: r\nusers:\n  alice:\n    groups: [a]\n    token_fil: t\nintervall: 5s\n")
    with pytest.raises(UserError) as e:
        load_config(path, {})
    assert str(path) in e.value.message
    by_key = {d.message.split(":")[0]: d for d in e.value.diagnostics}
    user = by_key["users.alice.token_fil"]
    assert user.file == str(path) and (user.line, user.col) == (5, 5)
    assert "did you mean 'token_file'?" in user.message
    assert "token_file" in user.hint
    top = by_key["intervall"]
    assert top.line == 6 and "did you mean 'interval'?" in top.message


def test_an_unknown_openlineage_key_is_located_too(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "repo: r\nopenlineage:\n  transport: http\n  ur: http://x\n"), {})
    [d] = e.value.diagnostics
    assert d.message == "openlineage.ur: unknown key (did you mean 'url'?)" and d.line == 4


def test_openlineage_is_validated_with_its_own_rules(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "repo: r\nopenlineage: {transport: http}\n"), {})
    [d] = e.value.diagnostics
    assert d.message.startswith("openlineage.url: required") and d.line == 2 and d.hint


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "repo: r\nbranch: main\nusers:\n  alice: {groups: [a}\n")
    with pytest.raises(UserError) as e:
        load_config(path, {})
    assert str(path) in e.value.message and "YAML" in e.value.message
    [d] = e.value.diagnostics
    assert d.file == str(path) and d.line == 4 and "YAML syntax error" in d.message


def test_a_duplicate_key_is_an_error(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "repo: a\nrepo: b\n"), {})
    assert e.value.diagnostics[0].line == 2


def test_the_file_must_hold_one_mapping(tmp_path):
    with pytest.raises(UserError):
        load_config(write(tmp_path, "- repo: r\n"), {})
    with pytest.raises(UserError):
        load_config(write(tmp_path, "repo: r\n---\nrepo: s\n"), {})
    with pytest.raises(UserError) as e:
        load_config(tmp_path / "missing.yaml", {})
    assert "missing.yaml" in e.value.message


def test_type_errors_and_the_status_branch_rule(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "repo: r\nmax_prune: -1\nself_heal: 'yes'\npaths: ['../up']\n"), {})
    assert {d.message.split(":")[0]: d.line for d in e.value.diagnostics} == {
        "max_prune": 2, "self_heal": 3, "paths": 4}
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "repo: r\nbranch: ops\nstatus_branch: ops\n"), {})
    assert "status_branch must differ from branch" in problems(e.value)[0]


def test_flags_override_the_file_and_none_means_unset(tmp_path):
    path = write(tmp_path, "repo: r\nbranch: main\ninterval: 10s\nmax_prune: 3\n")
    c = load_config(path, {"branch": "prod", "interval": "2m", "max_prune": None, "self_heal": True})
    assert (c.branch, c.interval, c.max_prune, c.self_heal) == ("prod", 120.0, 3, True)


def test_a_bad_flag_is_named_as_a_flag(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "repo: r\n"), {"listen": "host:70000"})
    [d] = e.value.diagnostics
    assert d.file is None and d.message.startswith("listen (from --listen): ")
    with pytest.raises(UserError) as e:
        load_config(None, {"repo": "r", "intreval": "5s"})
    assert "did you mean 'interval'?" in e.value.message


def test_relative_paths_are_resolved_next_to_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "key").write_text("k\n")
    write(folder, "repo: ../repo\nstate_dir: state\napi_token_file: secrets/api\n"
                         "webhook_secret_file: hook\nusers: {alice: {token_file: tokens/alice}}\n"
                         "openlineage: {transport: file, path: lineage.jsonl, api_key_file: key}\n")
    monkeypatch.chdir(tmp_path)  # somewhere else than the file's folder
    c = load_config(Path("etc/reconciler.yaml"), {"webhook_secret_file": "flag-hook"})
    base = folder.resolve()
    assert c.repo == str(base / "../repo")
    assert c.state_dir == base / "state" and c.api_token_file == base / "secrets/api"
    assert c.users["alice"].token_file == base / "tokens/alice"
    assert c.openlineage.path == str(base / "lineage.jsonl") and c.openlineage.api_key == "k"
    assert c.webhook_secret_file == Path("flag-hook")  # a flag is relative to where it was typed
    remote = load_config(write(tmp_path, "repo: git@git.example.com:data/p.git\n", "r2.yaml"), {})
    assert remote.repo == "git@git.example.com:data/p.git"


def test_read_secret_file_strips_one_newline(tmp_path):
    (tmp_path / "t").write_text(SECRET + "\n")
    assert read_secret_file(tmp_path / "t") == SECRET
    (tmp_path / "t2").write_text(SECRET + "\n\n")
    assert read_secret_file(tmp_path / "t2") == SECRET + "\n"


@pytest.mark.parametrize("content", [None, "", "\n", "  \n"])
def test_a_missing_or_empty_token_file_is_named(tmp_path, content):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as e:
        read_secret_file(path)
    assert str(path) in e.value.message and e.value.hint


def test_user_tokens_come_from_a_file_or_the_environment(tmp_path):
    (tmp_path / "alice").write_text(SECRET + "\n")
    alice = UserConfig(token_file=tmp_path / "alice")
    assert read_user_token("alice", alice, {}) == SECRET
    bob = UserConfig(token_env="BOB_TOKEN")
    assert read_user_token("bob", bob, {"BOB_TOKEN": SECRET}) == SECRET
    with pytest.raises(UserError) as e:
        read_user_token("bob", bob, {})
    assert "BOB_TOKEN" in e.value.message


def test_a_user_needs_exactly_one_token_source(tmp_path):
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, "repo: r\nusers:\n  carol:\n    groups: [a]\n"), {})
    [d] = e.value.diagnostics
    assert d.message == "users.carol: give exactly one of token_file or token_env" and d.line == 3


def test_token_values_never_appear_in_messages_or_reprs(tmp_path):
    # a token pasted where a key or a variable name belongs is refused without being echoed
    text = (f"repo: r\nopenlineage: {{transport: http, url: 'http://x', api_key: {SECRET}}}\n"
            f"users:\n  alice: {{token: {SECRET}, token_file: t}}\n  bob: {{token_env: '{SECRET}'}}\n")
    with pytest.raises(UserError) as e:
        load_config(write(tmp_path, text), {})
    assert len(e.value.diagnostics) == 2
    assert SECRET not in everything(e.value)
    (tmp_path / "t").write_text("")
    with pytest.raises(UserError) as e:
        read_secret_file(tmp_path / "t")
    ok = load_config(write(tmp_path, f"repo: r\nopenlineage: {{url: 'http://x', api_key: {SECRET}}}\n", "ok.yaml"), {})
    assert SECRET not in repr(ok) and SECRET not in str(ok)
    assert ok.openlineage.api_key == SECRET


def test_a_group_with_a_misspelt_or_mistyped_key_is_named(tmp_path):
    path = write(tmp_path, "repo: r\ngroups:\n  platform: {admn: true}\n  ops: {admin: 'yes'}\n")
    with pytest.raises(UserError) as e:
        load_config(path, {})
    text = "\n".join(d.message for d in e.value.diagnostics)
    assert "groups.platform.admn" in text and "did you mean 'admin'?" in text, text
    assert "groups.ops.admin" in text, text
