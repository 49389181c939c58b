"""A real daemon subprocess serving the sample repository's data, shared by the service and /query tests.

The sample repo gains a second service (`fraud-desk-api`, over the card transactions, JSON only)
with its own consumer token, so tests can present one service's token to another. Users come
from the daemon config: `analyst` (group payments-analysts: EU rows only), `outsider` (no
access) and `ops` (group platform-admins, an admin group).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_ENV, SAMPLE_REPO, GitRepo, free_port, run_cli

TOKENS = {
    "reporting": SAMPLE_ENV["PAYMENTS_API_TOKEN"],  # service transactions-api, consumer finance-reporting
    "fraud-desk": "fraud-desk-token-6c1f0e",  # service fraud-desk-api, consumer fraud-desk
    "analyst": "analyst-token-93b1d2",
    "outsider": "outsider-token-57aa04",
    "ops": "ops-token-0f3c88",
    "api": "metadata-api-token-21d9e7",
}

EXTRA_FILES = {
    "services/fraud-desk-api.yaml": """\
        version: v1
        type: service
        name: fraud-desk-api
        workspace: payments
        description: Card transactions for the fraud desk, card numbers masked
        owner: team-payments
        service:
          datasets:
            - {name: transactions, dataset: "lake://payments/transactions_clean"}
          queries:
            - name: large-for-merchant
              sql: "SELECT id, card_number, amount, status FROM transactions WHERE merchant_id = $merchant AND amount >= $min_amount ORDER BY id"
              params: {merchant: string, min_amount: float}
          formats: [json]
          tokens:
            - {name: fraud-desk, secret: fraud-desk-token}
        """,
    "secrets/fraud-desk-token.yaml": """\
        version: v1
        type: secret
        name: fraud-desk-token
        workspace: payments
        secret:
          from: {env: FRAUD_DESK_TOKEN}
        """,
    "policies/fraud-desk.yaml": """\
        version: v1
        type: policy
        name: fraud-desk
        policy:
          subjects: {users: [fraud-desk]}
          datasets: ["lake://payments/transactions_clean"]
          access: allow
          filter: "status <> 'declined'"
        """,
}


@dataclass
class DataDaemon:
    port: int
    state: Path
    repo: Path

    def call(self, path: str, token: str | None = None, params: dict | list | None = None, *,
             body: dict | None = None, headers: dict | None = None) -> tuple[int, dict, str]:
        """(status, headers, body text) of one request; `token` is a key of TOKENS or a literal."""
        url = path if path.startswith("http") else f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {TOKENS.get(token, token)}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=h, method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def json(self, path: str, token: str | None = None, params=None, expect: int = 200, **kw):
        status, _, text = self.call(path, token, params, **kw)
        assert status == expect, f"{status}: {text}"
        return json.loads(text)


def raw_transactions() -> list[dict]:
    """The sample's source CSV: the oracle for what the lake holds."""
    with open(SAMPLE_REPO / "data" / "transactions" / "transactions.csv", newline="") as f:
        return list(csv.DictReader(f))


def prepare(tmp: Path) -> tuple[Path, dict, dict]:
    """(repo path, daemon config, environment): the sample plus EXTRA_FILES committed, token files written."""
    dest = tmp / "repo"
    shutil.copytree(SAMPLE_REPO, dest, ignore=shutil.ignore_patterns(".reconciler", "__pycache__"))
    GitRepo(dest).commit(EXTRA_FILES, message="sample plus a second service")
    tokens = tmp / "tokens"
    tokens.mkdir()
    for name in ("api", "analyst", "outsider", "ops"):
        (tokens / name).write_text(TOKENS[name] + "\n")
    config = {
        "repo": str(dest), "state_dir": str(tmp / "state"), "listen": f"127.0.0.1:{free_port()}",
        "interval": "1h", "api_token_file": str(tokens / "api"),
        "users": {"analyst": {"groups": ["payments-analysts"], "token_file": str(tokens / "analyst")},
                  "outsider": {"groups": [], "token_file": str(tokens / "outsider")},
                  "ops": {"groups": ["platform-admins"], "token_file": str(tokens / "ops")}},
        "groups": {"platform-admins": {"admin": True, "description": "runs the platform"}},
    }
    env = {**SAMPLE_ENV, "FRAUD_DESK_TOKEN": TOKENS["fraud-desk"]}
    return dest, config, env


def _port(config: dict) -> int:
    return int(config["listen"].rsplit(":", 1)[1])


def start_data_daemon(tmp: Path) -> tuple[subprocess.Popen, DataDaemon]:
    """`reconciler daemon` as a subprocess; returns once its first reconcile applied everything."""
    dest, config, extra_env = prepare(tmp)
    (tmp / "reconciler.yaml").write_text(json.dumps(config))
    env = {**os.environ, **extra_env}
    env.pop("RECONCILER_STATE_DIR", None)
    log = open(tmp / "daemon.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "reconciler", "daemon", "--config", str(tmp / "reconciler.yaml")],
                         env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    d = DataDaemon(_port(config), tmp / "state", dest)
    deadline = time.monotonic() + 120
    while True:
        if p.poll() is not None:
            pytest.fail(f"the daemon exited with {p.returncode}:\n{(tmp / 'daemon.log').read_text()}")
        try:
            if d.call("/readyz")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            p.kill()
            pytest.fail(f"the daemon never became ready:\n{(tmp / 'daemon.log').read_text()}")
        time.sleep(0.2)
    return p, d


def serve_in_process(tmp: Path):
    """The repo applied by the real CLI, then the daemon's HTTP server alone in this process (no reconcile
    loop), so a test can hold the lake gate as a running workflow would. Returns (server, DataDaemon)."""
    from reconciler.daemon.config import load_config
    from reconciler.daemon.service import Daemon

    dest, config, env = prepare(tmp)
    r = run_cli("apply", "--auto-approve", "--repo", dest, "--state-dir", config["state_dir"], env=env)
    assert r.code == 0, r
    daemon = Daemon(load_config(None, config))
    server = daemon._start_http()
    deadline = time.monotonic() + 10
    while not server.server.started:
        assert time.monotonic() < deadline, "the HTTP server did not start"
        time.sleep(0.02)
    return server, DataDaemon(_port(config), Path(config["state_dir"]), dest)


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
