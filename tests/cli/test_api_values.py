"""The metadata API knows no subject, so it never hands out row values: profiles and quality samples
are withheld there (data leaves only through the policy-enforced query routes)."""
import json
import shutil
import time
import urllib.parse
import urllib.request

import pytest

from reconciler.engine.queries import WITHHELD, without_values
from tests.conftest import SAMPLE_ENV, SAMPLE_REPO, GitRepo, free_port, run_cli


@pytest.fixture(scope="module")
def sample_api(tmp_path_factory):
    from reconciler.daemon.config import load_config
    from reconciler.daemon.service import Daemon

    tmp = tmp_path_factory.mktemp("values")
    shutil.copytree(SAMPLE_REPO, tmp / "repo")
    repo = GitRepo(tmp / "repo")
    repo.commit()
    state = tmp / "state"
    r = run_cli("apply", "--auto-approve", "--repo", repo.path, "--state-dir", state, env=SAMPLE_ENV)
    assert r.code == 0, r
    port = free_port()
    daemon = Daemon(load_config(None, {"repo": str(repo.path), "state_dir": str(state),
                                       "listen": f"127.0.0.1:{port}"}))
    server = daemon._start_http()
    deadline = time.monotonic() + 10
    while not server.server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield port, state
    server.stop()


def test_dataset_details_over_http_withhold_profile_values(sample_api):
    port, state = sample_api
    url = f"http://127.0.0.1:{port}/api/v1/catalog/dataset?" + urllib.parse.urlencode(
        {"address": "lake://payments/transactions_clean"})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["profile"], body  # the sample's workflow profiles this table
    for p in body["profile"]:
        stats = p.get("stats") if isinstance(p.get("stats"), dict) else p
        assert stats.get("count") is not None
        assert all(stats.get(k) in (WITHHELD, None) for k in ("min", "max", "top")), p
    # the CLI, run by whoever holds the state files, still shows them
    r = run_cli("get", "catalog", "lake://payments/transactions_clean", "--state-dir", state, "-o", "json")
    assert r.code == 0 and WITHHELD not in r.out, r


def test_quality_samples_are_withheld():
    d = {"quality": [{"passed": False, "failing_rows": 2, "sample": [{"card_number": "4000000000000001"}]},
                     {"passed": True, "sample": []}],
         "profile": [{"column": "card_number", "count": 3, "min": "4000", "max": "4999", "top": [["4000", 1]]}]}
    out = json.dumps(without_values(d))
    assert "4000000000000001" not in out and '"4000"' not in out and '"4999"' not in out
    assert d["quality"][0]["failing_rows"] == 2 and d["profile"][0]["count"] == 3
