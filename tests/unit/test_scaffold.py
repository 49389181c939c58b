"""`scaffold()` writes a data product repository from the packaged template, or refuses with a UserError."""
from __future__ import annotations

import csv
from importlib import resources

import pytest
import yaml

from reconciler.core.diagnostics import UserError
from reconciler.scaffold import available_templates, scaffold


def load_all(path):
    return [d for d in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader) if d is not None]


def test_template_files_are_package_data():
    folder = resources.files("reconciler") / "templates" / "dataproduct"
    names = {entry.name for entry in folder.iterdir()}
    assert {"product.yaml", "depot.yaml", "workflow.yaml", "README.md", "data"} <= names
    assert "dataproduct" in available_templates()


def test_writes_every_file_with_the_name_substituted(tmp_path):
    dest = tmp_path / "orders"
    written = scaffold(dest, "dataproduct", "orders")

    rel = sorted(p.relative_to(dest).as_posix() for p in written)
    assert rel == ["README.md", "data/orders/records.csv", "depot.yaml", "product.yaml", "workflow.yaml"]
    for path in written:
        assert path.is_file()
        text = path.read_text()
        assert "{{" not in text and "__name__" not in text, path
    assert "# orders" in (dest / "README.md").read_text()


def test_written_artefacts_are_consistent(tmp_path):
    dest = tmp_path / "new"
    scaffold(dest, "dataproduct", "card-payments")

    [product] = load_all(dest / "product.yaml")
    [depot] = load_all(dest / "depot.yaml")
    [workflow] = load_all(dest / "workflow.yaml")
    for doc in (product, depot, workflow):
        assert doc["version"] == "v1"

    assert (product["type"], product["name"]) == ("dataproduct", "card-payments")
    section = product["dataproduct"]
    assert section["workspaces"][0]["name"] == "card-payments"
    assert {r["file"] for r in section["resources"]} == {"depot.yaml", "workflow.yaml"}
    assert section["slos"][0]["freshness"]["max_age"] == "26h"

    assert (depot["type"], depot["name"]) == ("depot", "card-payments-raw")
    assert depot["depot"]["path"] == "data/card-payments"
    assert section["inputs"][0]["dataset"] == "depot://card-payments-raw/records"

    assert (workflow["type"], workflow["workspace"]) == ("workflow", "card-payments")
    jobs = {j["name"]: j for j in workflow["workflow"]["dag"]}
    assert [jobs[n]["stack"] for n in ("clean", "checks", "profile")] == ["sql", "quality", "profile"]
    assert jobs["clean"]["spec"]["inputs"][0]["dataset"] == section["inputs"][0]["dataset"]
    written_table = jobs["clean"]["spec"]["outputs"][0]["dataset"]
    assert written_table == section["outputs"][0]["dataset"] == jobs["checks"]["spec"]["dataset"]

    with (dest / "data" / "card-payments" / "records.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {"id", "created_at", "amount", "status"} <= set(rows[0])


def test_empty_existing_directory_is_accepted(tmp_path):
    assert scaffold(tmp_path, "dataproduct", "orders")


@pytest.mark.parametrize("name", ["Orders", "1orders", "orders_v2", "", "-orders", "a" * 64])
def test_bad_name_is_refused_with_the_rule(tmp_path, name):
    with pytest.raises(UserError) as err:
        scaffold(tmp_path / "out", "dataproduct", name)
    assert "^[a-z][a-z0-9-]{0,62}$" in err.value.message
    assert not (tmp_path / "out").exists()


def test_name_too_long_for_derived_names_is_refused(tmp_path):
    with pytest.raises(UserError) as err:
        scaffold(tmp_path / "out", "dataproduct", "a" * 60)
    assert "at most 57" in err.value.message


def test_non_empty_destination_is_refused_and_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError) as err:
        scaffold(tmp_path, "dataproduct", "orders")
    assert err.value.message == f"{tmp_path} is not empty; choose a new directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_destination_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "taken"
    target.write_text("")
    with pytest.raises(UserError, match="is not a directory"):
        scaffold(target, "dataproduct", "orders")


def test_unknown_template_lists_the_templates(tmp_path):
    with pytest.raises(UserError) as err:
        scaffold(tmp_path / "out", "warehouse", "orders")
    assert "unknown template 'warehouse'" in err.value.message
    assert "dataproduct" in err.value.message
