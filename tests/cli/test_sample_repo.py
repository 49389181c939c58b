"""The reference project: sample-repo validates, applies and fills the catalog."""
from tests.conftest import SAMPLE_ENV, run_cli


def test_sample_repo_applies_end_to_end(sample_repo, state_dir):
    r = run_cli("validate", "--repo", sample_repo.path)
    assert r.code == 0, r
    r = run_cli("apply", "--auto-approve", "--repo", sample_repo.path, "--state-dir", state_dir, env=SAMPLE_ENV)
    assert r.code == 0, r
    got = run_cli("get", "--state-dir", state_dir, "-o", "json").json
    types = {x["type"] for x in got}
    assert {"workspace", "depot", "workflow", "policy", "service", "secret", "dataproduct"} <= types
    assert {x["phase"] for x in got} == {"Ready"}
    cat = run_cli("get", "catalog", "--state-dir", state_dir, "-o", "json").json
    addresses = {d["address"] for d in cat["datasets"]}
    assert any(a.startswith("depot://raw-transactions/") for a in addresses)
    assert any(a.startswith("depot://merchants/") for a in addresses)
    assert [p["name"] for p in cat["dataproducts"]] == ["card-payments"]
    card = next(d for d in cat["datasets"] if d["address"].startswith("depot://raw-transactions/"))
    assert any("pii" in (c.get("tags") or []) for c in card["columns"] if c["name"] == "card_number")
    r = run_cli("plan", "--detailed-exitcode", "--repo", sample_repo.path, "--state-dir", state_dir, env=SAMPLE_ENV)
    assert r.code == 0, r
