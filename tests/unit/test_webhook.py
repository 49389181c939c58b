"""Webhook deliveries, checked with the real example payloads of octokit/webhooks and go-gitlab
(/work/shared/schemas): signatures and tokens, size, and what each delivery asks the daemon to do."""
from __future__ import annotations

import hashlib
import hmac
import inspect
import json
from pathlib import Path

import pytest

from reconciler.daemon import webhook
from reconciler.daemon.webhook import MAX_BODY, Delivery, check_delivery, parse_delivery, verify_github, verify_gitlab

SCHEMAS = Path(__file__).resolve().parents[2].parent / "shared" / "schemas"
GH_SECRET = b"github-webhook-secret"
GL_SECRET = b"gitlab-webhook-secret"

pytestmark = pytest.mark.skipif(not (SCHEMAS / "github-webhooks").is_dir() or not (SCHEMAS / "gitlab-webhooks").is_dir(),
                                reason=f"example webhook payloads not found under {SCHEMAS}")


def payload(name: str) -> bytes:
    return (SCHEMAS / name).read_bytes()


def sign(body: bytes, secret: bytes = GH_SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def github(event: str, body: bytes, signature: str | None = None) -> dict[str, str]:
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
               "Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return headers


def gitlab(event: str, token: str | None) -> dict[str, str]:
    headers = {"X-Gitlab-Event": event, "Content-Type": "application/json"}
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return headers


def check(headers, body):
    return check_delivery(headers, body, github_secret=GH_SECRET, gitlab_secret=GL_SECRET)


def test_a_signed_github_push_triggers_with_branch_and_sha():
    body = payload("github-webhooks/push.with-new-branch.payload.json")
    status, delivery, _ = check(github("push", body, sign(body)), body)
    assert status == 202
    assert delivery == Delivery("github", "push", "master", "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                                reason="push to master")


def test_headers_are_looked_up_whatever_their_case():
    body = payload("github-webhooks/push.with-new-branch.payload.json")
    headers = {"x-github-event": "push", "X-HUB-SIGNATURE-256": sign(body).upper().replace("SHA256=", "sha256=")}
    assert check(headers, body)[0] == 202


def test_a_tag_delete_push_is_verified_but_ignored():
    body = payload("github-webhooks/push.payload.json")
    status, delivery, text = check(github("push", body, sign(body)), body)
    assert status == 200 and delivery.kind == "ignored" and "tag" in delivery.reason and "ignored" in text


def test_a_deleted_branch_is_ignored():
    data = json.loads(payload("github-webhooks/push.payload.json"))
    data["ref"] = "refs/heads/feature"
    body = json.dumps(data).encode()
    status, delivery, _ = check(github("push", body, sign(body)), body)
    assert status == 200 and delivery.branch == "feature" and "deleted" in delivery.reason


def test_an_opened_pull_request_asks_for_a_preview_of_head_against_base():
    body = payload("github-webhooks/pull_request.opened.payload.json")
    status, delivery, _ = check(github("pull_request", body, sign(body)), body)
    assert status == 202
    assert (delivery.provider, delivery.kind, delivery.branch, delivery.sha, delivery.base, delivery.number) == (
        "github", "pull_request", "changes", "ec26c3e57ca3a959ca5aad62de7213c562f8c821", "master", 2)


@pytest.mark.parametrize("action, kind", [("synchronize", "pull_request"), ("reopened", "pull_request"),
                                          ("closed", "ignored"), ("labeled", "ignored")])
def test_pull_request_actions(action, kind):
    data = json.loads(payload("github-webhooks/pull_request.opened.payload.json"))
    data["action"] = action
    assert parse_delivery(github("pull_request", b""), json.dumps(data).encode()).kind == kind


def test_ping_and_unknown_events_are_ignored():
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    for event in ("ping", "issues"):
        status, delivery, _ = check(github(event, body, sign(body)), body)
        assert status == 200 and delivery.kind == "ignored"


def test_a_gitlab_push_with_the_right_token_triggers():
    body = payload("gitlab-webhooks/push.json")
    status, delivery, _ = check(gitlab("Push Hook", GL_SECRET.decode()), body)
    assert status == 202
    assert (delivery.provider, delivery.kind, delivery.branch, delivery.sha) == (
        "gitlab", "push", "master", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7")


def test_a_gitlab_merge_request_with_the_right_token_triggers():
    body = payload("gitlab-webhooks/merge_request.json")
    status, delivery, _ = check(gitlab("Merge Request Hook", GL_SECRET.decode()), body)
    assert status == 202
    assert (delivery.kind, delivery.branch, delivery.sha, delivery.base, delivery.number) == (
        "pull_request", "ms-viewport", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "master", 1)


def test_a_closed_gitlab_merge_request_and_a_tag_push_are_ignored():
    data = json.loads(payload("gitlab-webhooks/merge_request.json"))
    data["object_attributes"]["action"] = "close"
    body = json.dumps(data).encode()
    assert check(gitlab("Merge Request Hook", GL_SECRET.decode()), body)[0] == 200
    body = payload("gitlab-webhooks/push.json")
    assert check(gitlab("Tag Push Hook", GL_SECRET.decode()), body)[0] == 200


@pytest.mark.parametrize("signature", [None, "", "sha256=", "sha1=abc", "sha256=" + "0" * 64,
                                       "sha256=zz" + "0" * 62, "sha256=ü" + "0" * 63])
def test_a_missing_or_wrong_github_signature_is_refused(signature):
    body = payload("github-webhooks/push.with-new-branch.payload.json")
    assert check(github("push", body, signature), body) == (401, None, "signature or token missing or wrong")


def test_a_signature_made_with_another_secret_or_body_is_refused():
    body = payload("github-webhooks/push.with-new-branch.payload.json")
    assert check(github("push", body, sign(body, b"other-secret")), body)[0] == 401
    assert check(github("push", body, sign(body + b" ")), body)[0] == 401


@pytest.mark.parametrize("token", [None, "", "wrong", GL_SECRET.decode() + "x", GL_SECRET.decode()[:-1]])
def test_a_missing_or_wrong_gitlab_token_is_refused(token):
    body = payload("gitlab-webhooks/push.json")
    assert check(gitlab("Push Hook", token), body)[0] == 401


def test_each_provider_is_checked_with_its_own_secret():
    body = payload("gitlab-webhooks/push.json")
    # a GitLab event carrying a valid GitHub signature proves nothing about GitLab
    headers = {**gitlab("Push Hook", None), "X-Hub-Signature-256": sign(body)}
    assert check(headers, body)[0] == 401
    # no secret configured for a provider: its deliveries are refused, even with a "matching" empty token
    assert check_delivery(gitlab("Push Hook", ""), body, github_secret=GH_SECRET, gitlab_secret=None)[0] == 401
    assert check_delivery(gitlab("Push Hook", ""), body, github_secret=None, gitlab_secret=b"")[0] == 401
    gh = payload("github-webhooks/push.with-new-branch.payload.json")
    assert check_delivery(github("push", gh, sign(gh, b"")), gh, github_secret=b"", gitlab_secret=None)[0] == 401
    assert check({}, gh)[0] == 401


def test_a_body_over_5_mb_is_refused_before_anything_else():
    body = b" " * (MAX_BODY + 1)
    assert check(github("push", body, sign(body)), body)[0] == 413
    assert check({}, body)[0] == 413
    exactly = b" " * MAX_BODY  # at the limit: read, verified, then ignored as not JSON
    assert check(github("push", exactly, sign(exactly)), exactly)[0] == 200


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[1, 2]", b"", b'{"ref": 5, "after": null}'])
def test_malformed_bodies_with_a_valid_signature_are_ignored_not_raised(body):
    status, delivery, _ = check(github("push", body, sign(body)), body)
    assert status == 200 and delivery.kind == "ignored" and delivery.reason


def test_malformed_pull_requests_are_ignored():
    for data in ({"action": "opened"}, {"action": "opened", "pull_request": {"head": {"ref": "x", "sha": "nope"},
                                                                            "base": {"ref": "main"}}}):
        assert parse_delivery(github("pull_request", b""), json.dumps(data).encode()).kind == "ignored"


def test_verify_functions_directly():
    body = b'{"a": 1}'
    assert verify_github(body, sign(body), GH_SECRET)
    assert not verify_github(body, None, GH_SECRET)
    assert verify_gitlab("tok", b"tok") and not verify_gitlab("tok", b"tok2") and not verify_gitlab(None, b"tok")


def test_secrets_are_compared_in_constant_time():
    for fn in (verify_github, verify_gitlab):
        source = inspect.getsource(fn)
        assert "hmac.compare_digest(" in source and "==" not in source
    assert webhook.hmac.compare_digest is hmac.compare_digest
