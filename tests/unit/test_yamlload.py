"""YAML files -> documents and diagnostics: strict where PyYAML is lax, never raising."""
from __future__ import annotations

import json

import pytest
import yaml

from reconciler.core.yamlload import YamlLocator, check_size, parse_file
from tests.conftest import SHARED  # the shared folder beside the clone (a copy of it in CI)

YAML_TEST_SUITE = SHARED / "corpora" / "yaml-test-suite"


def parse(text: str | bytes, **limits):
    data = text.encode() if isinstance(text, str) else text
    return parse_file("f.yaml", data, "blob", **limits)


def only_error(result):
    assert result.documents == []
    assert len(result.diagnostics) == 1, result.diagnostics
    diagnostic = result.diagnostics[0]
    assert diagnostic.is_error and diagnostic.file == "f.yaml"
    return diagnostic


def test_multi_document_file_keeps_positions_and_skips_non_mappings():
    result = parse("# leading comment\n"
                   "version: v1\ntype: depot\nname: a\n"
                   "---\n"
                   "- just\n- a list\n"
                   "---\n"
                   "---\n"
                   "\n"
                   "version: v1\ntype: workflow\nname: b\n"
                   "---\n"
                   "other: yaml\n")

    assert result.diagnostics == [] and not result.broken
    assert [(d.index, d.line, d.data.get("name")) for d in result.documents] == [(0, 2, "a"), (3, 11, "b"), (4, 15, None)]
    assert [d.is_artefact for d in result.documents] == [True, True, False]
    assert all(d.file == "f.yaml" and d.blob_id == "blob" for d in result.documents)


def test_data_matches_safe_loader_except_timestamps_which_stay_text():
    text = ("a: 1\nb: 1.5\nc: true\nd: ~\ne: 0x1f\nf: [x, 'y', \"z\"]\ng: {h: .inf}\n"
            "when: 2024-01-02\nstamp: 2024-01-02T03:04:05Z\ntagged: !!timestamp 2024-01-02\n"
            "base: &b {k: 1, j: 2}\nmerged: {<<: *b, k: 3}\n")
    data = parse(text).documents[0].data

    timestamps = ("when", "stamp", "tagged")
    expected = {k: v for k, v in yaml.load(text, Loader=yaml.CSafeLoader).items() if k not in timestamps}
    assert {k: v for k, v in data.items() if k not in timestamps} == expected
    assert data["when"] == "2024-01-02" and data["stamp"] == "2024-01-02T03:04:05Z" and data["tagged"] == "2024-01-02"
    assert data["merged"] == {"k": 3, "j": 2}
    json.dumps(data)  # JSON-safe


def test_duplicate_key_is_an_error_at_the_second_key():
    diagnostic = only_error(parse("name: a\nspec:\n  x: 1\n  y: 2\n  x: 3\n"))
    assert diagnostic.message == "duplicate key 'x' (first at line 3)"
    assert (diagnostic.line, diagnostic.col) == (5, 3)


def test_every_duplicate_key_is_reported_and_merged_keys_may_be_overridden():
    result = parse("base: &b {a: 1}\nm:\n  <<: *b\n  a: 2\n---\nk: 1\nk: 2\n---\nq: 1\nq: 2\n")
    assert result.documents == []
    assert [(d.message, d.line) for d in result.diagnostics] == [
        ("duplicate key 'k' (first at line 6)", 7), ("duplicate key 'q' (first at line 9)", 10)]


def test_tab_indentation_names_the_line():
    diagnostic = only_error(parse("a:\n  b: 1\n\tc: 2\n"))
    assert diagnostic.message.startswith("YAML syntax error: ")
    assert diagnostic.line == 3 and diagnostic.col == 1
    assert diagnostic.hint == "YAML indents with spaces; replace the tab at line 3"


def test_unclosed_quote():
    diagnostic = only_error(parse("name: a\ndescription: 'not closed\nowner: x\n"))
    assert diagnostic.message.startswith("YAML syntax error: ")
    assert diagnostic.line == 4
    assert diagnostic.hint == "a quoted string is not closed (it starts at line 2)"


def test_syntax_error_anywhere_drops_every_document():
    diagnostic = only_error(parse("version: v1\ntype: depot\n---\nkey: [unclosed\n"))
    assert diagnostic.line >= 4


@pytest.mark.parametrize("text, message, line", [
    ("a: b: c\n", "mapping values are not allowed", 1),
    ("a: @x\n", "found character '@' that cannot start any token", 1),
    ("a: &x 1\nb: &x 2\n", "duplicate anchor (first defined at line 1)", 2),
    ("a: *nope\n", "found undefined alias", 1),
    ("a: !custom x\n", "could not determine a constructor for the tag '!custom'", 1),
    ("a:\n  b: [1, !!int nope]\n", "invalid literal for int()", 2),
    ("? [a, b]\n: 1\n", "found an unhashable key", 1),
    ("a: b\x01\n", "control characters are not allowed", 1),
])
def test_other_errors_have_a_position_and_a_message(text, message, line):
    diagnostic = only_error(parse(text))
    assert message in diagnostic.message
    assert diagnostic.line == line and diagnostic.col >= 1


def test_billion_laughs_is_refused_quickly():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{', '.join(['*' + previous] * 9)}]")
    diagnostic = only_error(parse("\n".join(lines) + "\n"))
    assert diagnostic.message == "document expands to more than 200000 nodes through aliases (a YAML alias bomb?)"
    assert diagnostic.line is not None


def test_alias_limit_is_a_parameter_and_shared_aliases_below_it_are_fine():
    text = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\n"
    assert parse(text).documents[0].data["b"] == [[1, 2, 3]] * 3
    assert "more than 10 nodes" in only_error(parse(text, max_nodes=10)).message


def test_recursive_alias_is_an_error():
    assert "contains it" in only_error(parse("a: &x [1, *x]\n")).message


def test_deep_nesting_does_not_crash():
    deep = "".join(" " * i + "k:\n" for i in range(990)) + " " * 990 + "v\n"
    assert len(parse(deep).documents) == 1
    assert "nesting depth" in only_error(parse("[" * 5000 + "]" * 5000)).message


def test_oversized_file_is_refused_unparsed():
    diagnostic = only_error(parse(b"a: 1\n" + b"#" * (11 * 1024 * 1024)))
    assert diagnostic.message == "file is 11 MB, over the 10 MB limit"
    assert ".reconcilerignore" in diagnostic.hint
    assert check_size("f.yaml", 100, max_bytes=100) is None
    assert check_size("f.yaml", 10_485_761).message == "file is 10 MB, over the 10 MB limit"
    assert check_size("f.yaml", 101, max_bytes=100).message == "file is 101 bytes, over the 100 bytes limit"


def test_non_utf8_bytes_are_a_clear_error():
    diagnostic = only_error(parse(b"name: ok\ndescription: caf\xe9 latin-1\n"))
    assert diagnostic.message.startswith("file is not valid UTF-8 text")
    assert (diagnostic.line, diagnostic.col) == (2, 18)
    assert "UTF-8" in diagnostic.hint


def test_utf8_bom_and_empty_files():
    assert parse(b"\xef\xbb\xbfa: 1\n").documents[0].data == {"a": 1}
    assert parse(b"").documents == [] and parse(b"").diagnostics == []
    assert parse("# only a comment\n---\n").diagnostics == []


@pytest.mark.skipif(not YAML_TEST_SUITE.is_dir(), reason=f"yaml-test-suite corpus not found at {YAML_TEST_SUITE}")
def test_yaml_test_suite_never_crashes_and_errors_have_positions():
    files = sorted((YAML_TEST_SUITE / "valid").glob("*.yaml")) + sorted((YAML_TEST_SUITE / "error").glob("*.yaml"))
    assert len(files) == 402
    parsed = 0
    for file in files:
        data = file.read_bytes()
        result = parse_file(file.name, data, "blob")
        if result.diagnostics:
            assert result.documents == []
            for diagnostic in result.diagnostics:
                assert diagnostic.is_error and diagnostic.file == file.name, (file, diagnostic)
                assert diagnostic.line >= 1 and diagnostic.col >= 1, (file, diagnostic)
        else:
            parsed += 1
        YamlLocator(lambda _path: data).locate(file.name, 0, ("a", 0, "b"))
    assert parsed > 200  # most of the suite is readable by a YAML 1.1 parser


WORKFLOW = """\
version: v1
type: depot
name: first
---
version: v1
type: workflow
name: daily
workflow:
  dag:
    - name: clean
      stack: sql
      spec: {inputs: [{name: raw, dataset: "depot://raw/t"}]}
    - name: checks
      depends_on: [clean]
"""


@pytest.mark.parametrize("path, position", [
    ((), (5, 1)),
    (("name",), (7, 1)),  # a mapping key: the key's position
    (("workflow", "dag"), (9, 3)),
    (("workflow", "dag", 1), (13, 7)),  # a list item: the item's position
    (("workflow", "dag", 0, "stack"), (11, 7)),
    (("workflow", "dag", 0, "spec", "inputs", 0, "dataset"), (12, 35)),  # inside flow collections
    (("workflow", "dag", 1, "depends_on", 0), (14, 20)),
    (("workflow", "dag", 1, "stack"), (13, 7)),  # missing key: the nearest existing ancestor
    (("workflow", "dag", 7, "name"), (9, 3)),  # missing index
    (("workflow", "schedule", "cron"), (8, 1)),
])
def test_locator_finds_nested_paths(path, position):
    locator = YamlLocator(lambda _path: WORKFLOW.encode())
    assert locator.locate("wf.yaml", 1, path) == position


def test_locator_reads_each_file_once_and_follows_merge_keys():
    reads = []

    def read(path):
        reads.append(path)
        return b"base: &b\n  owner: x\nthing:\n  <<: *b\n  name: y\n"

    locator = YamlLocator(read)
    assert locator.locate("m.yaml", 0, ("thing", "name")) == (5, 3)
    assert locator.locate("m.yaml", 0, ("thing", "owner")) == (2, 3)
    assert reads == ["m.yaml"]
    cyclic = YamlLocator(lambda _path: b"a: &a\n  <<: *a\n  x: 1\n")
    assert cyclic.locate("c.yaml", 0, ("a", "missing")) == (1, 1)


def test_locator_gives_none_for_unknown_documents_and_broken_files():
    def read(path):
        if path == "missing.yaml":
            raise FileNotFoundError(path)
        return b"a: [\n" if path == "broken.yaml" else b"a: 1\n"

    locator = YamlLocator(read)
    assert locator.locate("missing.yaml", 0, ("a",)) is None
    assert locator.locate("broken.yaml", 0, ("a",)) is None
    assert locator.locate("ok.yaml", 3, ("a",)) is None
    assert locator.locate("ok.yaml", 0, ("a",)) == (1, 1)
