"""Webhook deliveries from GitHub and GitLab: authenticity, size, and what each one asks for.

Pure functions, no HTTP: the daemon's `/webhook` endpoint hands over the headers and the body and
answers with the status `check_delivery` returns. A delivery never raises: anything malformed or
unknown becomes an "ignored" `Delivery` with a reason the daemon can log.

GitHub signs the body: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body with the secret>`.
GitLab sends the secret itself in `X-Gitlab-Token`. Both are compared in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

MAX_BODY = 5 * 1024 * 1024

GITHUB, GITLAB = "github", "gitlab"
PUSH, PULL_REQUEST, IGNORED = "push", "pull_request", "ignored"

GITHUB_PR_ACTIONS = ("opened", "synchronize", "reopened")  # the ones that bring a new head commit
GITLAB_MR_ACTIONS = ("open", "update", "reopen")
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # SHA-1 or SHA-256 object ids
_SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_BRANCH_PREFIX, _TAG_PREFIX = "refs/heads/", "refs/tags/"


@dataclass
class Delivery:
    provider: str  # "github" | "gitlab"
    kind: str  # "push" | "pull_request" | "ignored"
    branch: str | None = None  # pushed branch, or the pull request's head branch
    sha: str | None = None  # the commit to look at
    base: str | None = None  # a pull request's target branch
    number: int | None = None  # a pull request's number (GitLab: the merge request's iid)
    reason: str = ""

    @property
    def triggers(self) -> bool:
        return self.kind != IGNORED


# ---------------------------------------------------------------------------- authenticity

def verify_github(body: bytes, signature_header: str | None, secret: bytes) -> bool:
    """Whether `X-Hub-Signature-256` is the HMAC-SHA256 of `body` under `secret`."""
    if not secret or not signature_header:  # an empty key would let anyone sign
        return False
    match = _SIGNATURE.match(signature_header.strip())
    if match is None:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).digest()
    return hmac.compare_digest(expected, bytes.fromhex(match.group(1)))


def verify_gitlab(token_header: str | None, secret: bytes) -> bool:
    """Whether `X-Gitlab-Token` equals `secret`."""
    if not secret or token_header is None:
        return False
    try:
        given = token_header.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a badly decoded header
        return False
    return hmac.compare_digest(given, secret)


# ---------------------------------------------------------------------------- what a delivery asks for

def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): v for k, v in headers.items()}


def _provider(h: dict[str, str]) -> str | None:
    if "x-github-event" in h:
        return GITHUB
    if "x-gitlab-event" in h:
        return GITLAB
    if "x-hub-signature-256" in h:
        return GITHUB
    if "x-gitlab-token" in h:
        return GITLAB
    return None


def parse_delivery(headers: Mapping[str, str], body: bytes) -> Delivery:
    """What the (already verified) delivery asks for; headers are looked up case-insensitively."""
    h = _lower(headers)
    provider = _provider(h)
    if provider is None:
        return Delivery(GITHUB, IGNORED, reason="no X-GitHub-Event or X-Gitlab-Event header")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Delivery(provider, IGNORED, reason="the body is not valid JSON")
    if not isinstance(payload, dict):
        return Delivery(provider, IGNORED, reason="the body is not a JSON object")
    if provider == GITHUB:
        return _github(h.get("x-github-event", ""), payload)
    return _gitlab(h.get("x-gitlab-event", ""), payload)


def _github(event: str, p: dict) -> Delivery:
    if event == "ping":
        return Delivery(GITHUB, IGNORED, reason="ping")
    if event == "push":
        return _push(GITHUB, p.get("ref"), p.get("after"), deleted=p.get("deleted") is True)
    if event == "pull_request":
        action = p.get("action")
        pr = _dict(p.get("pull_request"))
        head, base = _dict(pr.get("head")), _dict(pr.get("base"))
        number = p.get("number", pr.get("number"))
        if action not in GITHUB_PR_ACTIONS:
            return Delivery(GITHUB, IGNORED, _str(head.get("ref")), base=_str(base.get("ref")),
                            number=_int(number), reason=f"pull_request action {action!r} is not handled")
        return _change(GITHUB, head.get("ref"), head.get("sha"), base.get("ref"), number)
    return Delivery(GITHUB, IGNORED, reason=f"event {event!r} is not handled" if event else "no event header")


def _gitlab(event: str, p: dict) -> Delivery:
    kind = p.get("object_kind")
    if event == "Push Hook" and kind == "push":
        return _push(GITLAB, p.get("ref"), p.get("after"), deleted=False)
    if event == "Merge Request Hook" and kind == "merge_request":
        attrs = _dict(p.get("object_attributes"))
        action = attrs.get("action")
        if action not in GITLAB_MR_ACTIONS:
            return Delivery(GITLAB, IGNORED, _str(attrs.get("source_branch")), base=_str(attrs.get("target_branch")),
                            number=_int(attrs.get("iid")), reason=f"merge request action {action!r} is not handled")
        sha = _dict(attrs.get("last_commit")).get("id")
        return _change(GITLAB, attrs.get("source_branch"), sha, attrs.get("target_branch"), attrs.get("iid"))
    if event in ("Push Hook", "Merge Request Hook"):
        return Delivery(GITLAB, IGNORED, reason=f"{event} with object_kind {kind!r}")
    return Delivery(GITLAB, IGNORED, reason=f"event {event!r} is not handled" if event else "no event header")


def _push(provider: str, ref: Any, after: Any, deleted: bool) -> Delivery:
    if not isinstance(ref, str) or not ref:
        return Delivery(provider, IGNORED, reason="push without a ref")
    if ref.startswith(_TAG_PREFIX):
        return Delivery(provider, IGNORED, reason=f"tag push ({ref})")
    if not ref.startswith(_BRANCH_PREFIX):
        return Delivery(provider, IGNORED, reason=f"push to {ref}, not a branch")
    branch = ref[len(_BRANCH_PREFIX):]
    sha = after if isinstance(after, str) else None
    if deleted or (sha is not None and set(sha) == {"0"}):
        return Delivery(provider, IGNORED, branch, reason=f"branch {branch} was deleted")
    if sha is None or not _SHA.match(sha):
        return Delivery(provider, IGNORED, branch, reason="push without a valid 'after' commit id")
    return Delivery(provider, PUSH, branch, sha, reason=f"push to {branch}")


def _change(provider: str, head: Any, sha: Any, base: Any, number: Any) -> Delivery:
    head, base, sha = _str(head), _str(base), _str(sha)
    if not head or not base:
        return Delivery(provider, IGNORED, head, base=base, number=_int(number),
                        reason="pull request without head and base branches")
    if sha is None or not _SHA.match(sha):
        return Delivery(provider, IGNORED, head, base=base, number=_int(number),
                        reason="pull request without a valid head commit id")
    return Delivery(provider, PULL_REQUEST, head, sha, base, _int(number), reason=f"{head} into {base}")


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---------------------------------------------------------------------------- the endpoint's answer

def check_delivery(headers: Mapping[str, str], body: bytes, *, github_secret: bytes | None,
                   gitlab_secret: bytes | None) -> tuple[int, Delivery | None, str]:
    """(HTTP status, delivery, short text for the response and the log).

    413: body over MAX_BODY; 401: not verified by the secret of the provider it claims to come from
    (or no secret configured for it); 202: verified and it triggers something; 200: verified, ignored.
    """
    if len(body) > MAX_BODY:
        return 413, None, f"body over {MAX_BODY} bytes"
    h = _lower(headers)
    provider = _provider(h)
    if provider == GITHUB:
        verified = github_secret is not None and verify_github(body, h.get("x-hub-signature-256"), github_secret)
    elif provider == GITLAB:
        verified = gitlab_secret is not None and verify_gitlab(h.get("x-gitlab-token"), gitlab_secret)
    else:
        verified = False
    if not verified:
        return 401, None, "signature or token missing or wrong"
    delivery = parse_delivery(h, body)
    if delivery.kind == IGNORED:
        return 200, delivery, f"ignored: {delivery.reason}"
    return 202, delivery, f"accepted: {delivery.reason}"
