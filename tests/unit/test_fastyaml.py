"""The yaml-rs fast path: it declines, or it gives exactly what the libyaml path gives.

The differential tests are the proof: every input is parsed both ways and the fast
result, when there is one, must equal the libyaml path's (types, key order, NaN and
-0.0 included). The other tests pin what must not be declined (the speed depends on
it) and that each guard declines what it is for.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import itertools
import random
import subprocess
import sys
from sys import intern

import pytest

from reconciler.core import fastyaml
from reconciler.core.fastyaml import fast_parse
from reconciler.core.yamlload import parse_file, parse_file_libyaml
from tests.conftest import ROOT, SAMPLE_REPO, SHARED

YAML_TEST_SUITE = SHARED / "corpora" / "yaml-test-suite"
needs_corpus = pytest.mark.skipif(not YAML_TEST_SUITE.is_dir(), reason=f"corpus not found at {YAML_TEST_SUITE}")


def same(a, b) -> bool:
    """Equal, with the same types all the way down, dict keys in the same order, floats by repr."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return (len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
                and all(same(x, y) for x, y in zip(a.values(), b.values())))
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is float:
        return repr(a) == repr(b)  # nan == nan, and -0.0 is not 0.0
    return a == b


def check(data: bytes) -> bool:
    """True when the fast path answered (and agreed); False when it declined."""
    fast = fast_parse("f.yaml", data, "blob")
    if fast is None:
        return False
    ref = parse_file_libyaml("f.yaml", data, "blob")
    assert ref.diagnostics == [], f"fast path accepted what libyaml rejects: {data[:300]!r}: {ref.diagnostics[0]}"
    assert (fast.path, fast.blob_id, fast.diagnostics) == ("f.yaml", "blob", [])
    got = [(d.file, d.index, d.line, d.blob_id) for d in fast.documents]
    want = [(d.file, d.index, d.line, d.blob_id) for d in ref.documents]
    assert got == want, f"documents differ for {data[:300]!r}"
    for mine, theirs in zip(fast.documents, ref.documents):
        assert same(mine.data, theirs.data), f"{data[:300]!r}:\n fast {mine.data!r}\n ref  {theirs.data!r}"
    return True


def accepted(text: str | bytes):
    data = text.encode() if isinstance(text, str) else text
    assert check(data), f"declined: {data!r}"
    return fast_parse("f.yaml", data, "blob")


def declined(text: str | bytes) -> bool:
    return fast_parse("f.yaml", text.encode() if isinstance(text, str) else text, "blob") is None


# --------------------------------------------------------------------------- differential

def _corpus_inputs():
    for file in sorted((YAML_TEST_SUITE / "valid").glob("*.yaml")) + sorted((YAML_TEST_SUITE / "error").glob("*.yaml")):
        data = file.read_bytes()
        yield file.name, data
        yield file.name + " (CRLF)", data.replace(b"\n", b"\r\n")
        yield file.name + " (after ---)", b"---\n" + data
        yield file.name + " (nested)", b"k:\n" + b"".join(b"  " + line for line in data.splitlines(True))
        yield file.name + " (no final newline)", data.rstrip(b"\n")
        yield file.name + " (BOM)", b"\xef\xbb\xbf" + data


@needs_corpus
def test_yaml_test_suite_fast_path_declines_or_agrees():
    files = list((YAML_TEST_SUITE / "valid").glob("*.yaml")) + list((YAML_TEST_SUITE / "error").glob("*.yaml"))
    assert len(files) == 402
    answered = sum(check(data) for _, data in _corpus_inputs())
    assert answered > 300  # of 2010: the corpus is made of corner cases, most are declined


def test_sample_repo_is_read_by_the_fast_path():
    files = sorted(SAMPLE_REPO.rglob("*.y*ml"))
    assert len(files) >= 10
    for file in files:
        assert check(file.read_bytes()), f"{file} declined"


def _strings_in_tests():
    for file in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and len(node.value) > 2:
                yield node.value if isinstance(node.value, bytes) else node.value.encode("utf-8", "surrogatepass")


def test_the_test_suites_yaml_strings_fast_path_declines_or_agrees():
    strings = list(_strings_in_tests())
    assert len(strings) > 1000
    assert sum(check(data) for data in strings) > 200


# Plain scalars are where YAML 1.1 and 1.2 differ most: every token of up to 3 of these pieces,
# as a value, key, flow item and quoted, in both parsers.
PIECES = ["0", "1", "7", "8", "9", ".", "_", ":", "+", "-", "e", "E", "x", "o", "b", "inf", "nan"]
CONTEXTS = ["a: {}\n", "- {}\n", "{}: a\n", "[{}]\n", "{{k: {}}}\n", "{{{}: a}}\n", "? {}\n", "a: '{}'\n", 'a: "{}"\n']
WORDS = ["yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "y", "Y", "n", "N",
         "true", "True", "TRUE", "tRue", "false", "False", "null", "Null", "NULL", "nULL", "~", "", "<<", "=",
         ".inf", ".Inf", ".INF", ".iNf", "-.inf", "+.inf", ".nan", ".NaN", ".NAN", ".nAn", "+.nan",
         "0x1F", "0X1F", "0x_", "0o17", "0O17", "0b101", "0B101", "0b_", "1_000", "1__", "_", "1:20", "1:20.5",
         "-1:20", "12:30:45", "190:20:30", "1e3", "1E3", "1.0e3", "1.0e+3", "1.0E-3", "6.8523015e+5", "+12", "-0",
         "-0.0", "0.0", "1.", "00", "07", "08", "0755", "0.1000000000000000055511151231257827", "2024-01-01",
         "2024-01-01T00:00:00Z", "1" * 30, "1" * 4301, "9" * 20 + ".5", "1_2.3_4", "3.", ".5", "+.5", "-.5", "._5"]


def test_plain_scalar_tokens_fast_path_declines_or_agrees():
    tokens = ["".join(combo) for n in range(1, 4) for combo in itertools.product(PIECES, repeat=n)] + WORDS
    answered = 0
    for token in tokens:
        for context in CONTEXTS:
            answered += check(context.format(token).encode())
    assert answered > len(tokens) * 4


def test_implicit_keys_around_libyamls_1024_character_limit_decline_or_agree():
    for length in range(1018, 1030):
        key = "k" * length
        for context in ["{}: 1\n", "a:\n  {}: 1\n", "- {}: 1\n", '"{}": 1\n', "'{}': 1\n", "{{{}: 1}}\n",
                        "[{}: 1]\n", "{} : 1\n", '"\\x41{}": 1\n', "é{}: 1\n"]:
            check(context.format(key).encode())


@pytest.mark.slow
def test_plain_scalar_tokens_of_four_pieces():
    for combo in itertools.product(PIECES, repeat=4):
        for context in CONTEXTS[:5]:
            check(context.format("".join(combo)).encode())


def _mutants(seeds: list[bytes], count: int, seed: int):
    pieces = [b" ", b"\n", b":", b"-", b"[", b"]", b"{", b"}", b",", b"?", b"#", b'"', b"'", b"|", b">", b"0",
              b"1", b".", b"_", b"e", b"x", b"+", b"\\", b"a", b"  ", b": ", b"- ", b"---\n", b"\n  ", b"yes",
              b"0o7", b"1e3", b"*", b"&", b"!", b"<<", b"%", b"@", b"=", b"~", b"\r\n", b"..."]
    rng = random.Random(seed)
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(data))
            roll = rng.random()
            if roll < 0.4:
                data[at:at] = rng.choice(pieces)
            elif roll < 0.7:
                del data[at:at + rng.randint(1, 3)]
            else:
                data[at:at + 1] = rng.choice(pieces)
        yield bytes(data)


@needs_corpus
def test_mutated_files_fast_path_declines_or_agrees():
    seeds = [file.read_bytes() for file in sorted(YAML_TEST_SUITE.glob("*/*.yaml"))]
    seeds += [file.read_bytes() for file in sorted(SAMPLE_REPO.rglob("*.yaml"))]
    seeds += [text.encode() for text in list(_bench_artefacts().values())[:100]]
    answered = sum(check(data) for data in _mutants(seeds, 6000, seed=20260))
    assert answered > 800


def test_the_differential_check_catches_a_missing_guard(monkeypatch):
    """The harness above can fail: with the string guard off, `yes` reads differently."""
    monkeypatch.setattr(fastyaml, "_string_risk", lambda text: False)
    with pytest.raises(AssertionError, match="fast"):
        check(b"enabled: yes\n")
    monkeypatch.undo()
    monkeypatch.setattr(fastyaml, "_numbers_agree", lambda data: True)
    with pytest.raises(AssertionError):
        check(b"mode: 0755\n")


def test_what_the_number_scan_relies_on():
    """Every plain token yaml-rs reads as a number is one the scan finds (a run of its
    characters that starts with a digit, `.` or `_` after an optional sign)."""
    alphabet = [chr(c) for c in range(0x21, 0x7F)]
    tokens = ["".join(p) for n in (1, 2) for p in itertools.product(alphabet, repeat=n)]
    tokens += ["".join(p) for p in itertools.product("0189._+-eExXoObBaAfFiInN:", repeat=3)]
    tokens += WORDS
    numbers = 0
    for token in tokens:
        try:
            value = fastyaml._loads(f"k: {token}\n", parse_datetime=False)["k"]
        except Exception:
            continue
        if type(value) in (int, float):
            numbers += 1
            body = token[1:] if token[:1] in "+-" else token
            assert fastyaml._TOKEN_RUN.fullmatch(token.encode()), token
            assert body[:1] in set("0123456789._"), token
        else:
            check(f"k: {token}\n".encode())
    assert numbers > 500


# --------------------------------------------------------------------------- not declined

@functools.cache
def _bench_artefacts() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("bench_gen_repo", ROOT / "bench" / "gen_repo.py")
    gen_repo = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen_repo  # its dataclasses look their module up
    spec.loader.exec_module(gen_repo)
    files, _ = gen_repo.repo_files(400, 20)
    return {path: text for path, text in files.items() if path.endswith(".yaml")}


def test_generated_bench_artefacts_are_never_declined():
    artefacts = _bench_artefacts()
    assert len(artefacts) == 400
    for path, text in artefacts.items():
        assert check(text.encode()), f"{path} declined"


ORDINARY = """\
# A workflow, with what artefact files usually hold.
version: v1
type: workflow
name: daily-orders
description: Cleans orders — the café's too (été, 東京, emoji 🎉)
owner: team-payments
labels:
  cost-center: "1000"
  version: "1.2.3"
  release: '2.0'
  since: 2024-01-01
  at: 2024-01-01T08:30:00Z
  enabled: true
  paused: False
  nothing: null
  empty: ""
  tilde: ~
tags: [domain.payments, tier.gold, "x:y"]
schedule: {cron: "0 2 * * *", timezone: UTC}
docs: https://example.com/a?b=1&c=2#frag
retry: {count: 3, delay: 5s, factor: 0.5, max: 100, jitter: -1, limit: 1.5e+3}
policy:
  subjects: {groups: ["*"], users: []}   # "*": everyone
  datasets: ["lake://payments/*", lake://other/*]
workflow:
  dag:
    - name: clean
      stack: sql
      spec:
        steps:
          - {name: valid, sql: "SELECT * FROM src WHERE a != b AND amount > 2"}
          - name: daily
            sql: |
              SELECT category, count(*) AS n,
                     sum(amount) AS total  -- money: "total"
              FROM mine
              WHERE status <> 'void' AND note != ''
            note: >
              folded
              text

              with a paragraph
    - name: checks
      depends_on: [clean]
      spec:
        checks:
          - row_count: {min: 1}
          - not_null: [id, amount]
          - expression: "amount >= 0 || refund"
"""


def test_ordinary_artefact_files_are_not_declined():
    result = accepted(ORDINARY)
    data = result.documents[0].data
    assert data["labels"]["cost-center"] == "1000" and data["labels"]["since"] == "2024-01-01"
    assert data["retry"] == {"count": 3, "delay": "5s", "factor": 0.5, "max": 100, "jitter": -1, "limit": 1500.0}
    assert data["policy"]["subjects"]["groups"] == ["*"]
    accepted(ORDINARY.replace("\n", "\r\n"))
    accepted(ORDINARY.rstrip("\n"))  # no final line break (the last value is no block scalar)
    accepted(ORDINARY + "---\n" + ORDINARY)
    accepted("\ufeff" + ORDINARY)  # a leading byte order mark, as some editors write


def test_keys_are_interned_like_the_libyaml_builder_interns_them():
    one = accepted("some-long-key-name-xyz: 1\nnested: {inner-key-name-abc: [a]}\n").documents[0].data
    two = accepted("some-long-key-name-xyz: 2\nnested: {inner-key-name-abc: [b]}\n").documents[0].data
    for key in list(one) + list(one["nested"]):
        assert intern(key) is key
    assert list(one)[0] is list(two)[0]
    assert list(one["nested"])[0] is list(two["nested"])[0]


@pytest.mark.parametrize("text, expected", [
    ("# leading comment\nversion: v1\ntype: depot\nname: a\n---\n- just\n- a list\n---\n---\n\n"
     "version: v1\ntype: workflow\nname: b\n---\nother: yaml\n", [(0, 2), (3, 11), (4, 15)]),
    ("--- {a: 1}\n--- # comment\n\n  # indented comment\n  b: 2\n---\n", [(0, 1), (1, 5)]),
    ("# only comments\n\n---\na: 1\n", [(0, 4)]),
    ("\n\n  a: 1\n  b: 2\n", [(0, 3)]),
    ("---\r\na: 1\r\n---\r\n\r\nb: 2\r\n", [(0, 2), (1, 5)]),
    ("a: 1\n---x: 2\n----: 3\n", [(0, 1)]),
    ("a: |\n  x\n---\nb: 2\n", [(0, 1), (1, 4)]),
])
def test_multi_document_indexes_and_lines(text, expected):
    assert [(d.index, d.line) for d in accepted(text).documents] == expected


# --------------------------------------------------------------------------- each guard declines

@pytest.mark.parametrize("text", [
    pytest.param(b"a: b\x01\n", id="control character"),
    pytest.param(b"a:\tb\n", id="tab"),
    pytest.param(b"a: b\x7f\n", id="DEL"),
    pytest.param("a: b\u0085c\n".encode(), id="NEL, a line break in YAML 1.1"),
    pytest.param("a: b\u2028c\n".encode(), id="LS"),
    pytest.param("a: b\u2029c\n".encode(), id="PS"),
    pytest.param("a: b\x9fc\n".encode(), id="C1 control"),
    pytest.param("a: b\ufeff\n".encode(), id="BOM inside"),
    pytest.param("a: \uffff\n".encode(), id="U+FFFF"),
    pytest.param(b"a: caf\xe9\n", id="not UTF-8"),
    pytest.param(b"a: 1\rb: 2\n", id="lone CR"),
    pytest.param(b"a: |\n  x", id="block scalar at the end without a line break"),
    pytest.param(b"a: [1]\nb:\n  - c: >\n      x", id="nested block scalar at the end without a line break"),
    pytest.param(b"a: x\n  ", id="blank last line without a line break"),
    pytest.param(b"a: [x:]\n", id="x: before ]"),
    pytest.param(b"a: {b:, c}\n", id="x: before ,"),
    pytest.param(b"a: {count:?1}\n", id="x: before ?"),
    pytest.param(b"? a\n: b\n", id="line starting with :"),
    pytest.param(b"a: {\"b\"\n  : c}\n", id="flow value on a later line than its key"),
    pytest.param(b"a: {multi\n  line: c}\n", id="flow key spanning lines"),
    pytest.param(b"a: 1\n...\n", id="document end marker"),
    pytest.param(b'a: {"x\\\n  y": 1}\n', id="escaped line break with a flow mapping (a key spanning lines)"),
    pytest.param(b"a: &x 1\n", id="anchor"),
    pytest.param(b"a: 1\nb: *x\n", id="alias"),
    pytest.param(b"a: [*x]\n", id="alias in flow"),
    pytest.param(b"a: !x 1\n", id="tag"),
    pytest.param(b"a: !!str 1\n", id="core tag"),
    pytest.param(b"%YAML 1.1\n---\na: 1\n", id="directive"),
    pytest.param(b"a: @x\n", id="reserved indicator @ (an error for yaml-rs too)"),
    pytest.param(b"a: `x\n", id="reserved indicator backquote (an error for yaml-rs too)"),
    pytest.param(b"base: {a: 1}\nm:\n  <<: {b: 2}\n", id="merge key"),
    pytest.param(b"a: =\n", id="value key"),
    pytest.param(b"a: yes\n", id="yes"),
    pytest.param(b"a: Off\n", id="Off"),
    pytest.param(b"on: 1\n", id="key on"),
    pytest.param(b"a: 1:20\n", id="sexagesimal"),
    pytest.param(b"a: 0755\n", id="octal"),
    pytest.param(b"a: 0o17\n", id="0o octal"),
    pytest.param(b"a: 1e3\n", id="exponent without dot and sign"),
    pytest.param(b"a: _0\n", id="leading underscore"),
    pytest.param(b"a: +.5\n", id="signed leading dot"),
    pytest.param(b"a: .iNf\n", id="mixed-case inf"),
    pytest.param(b"a: 0X1F\n", id="upper-case hex prefix"),
    pytest.param(b"a: " + b"1" * 5000 + b"\n", id="int over the digit limit"),
    pytest.param(b"1: a\n", id="int key"),
    pytest.param(b"true: a\n", id="bool key"),
    pytest.param(b"null: a\n", id="null key"),
    pytest.param(b"? [a]\n: b\n", id="list key"),
    pytest.param(b"a: [?x]\n", id="flow ?x"),
    pytest.param(b"a: [:x]\n", id="flow :x"),
    pytest.param(b"a: [|x]\n", id="flow |x"),
    pytest.param(b"text\n", id="scalar document"),
    pytest.param(b"--- >\nline\n", id="scalar document at column 0"),
    pytest.param(b"--- - a\n", id="block content on the marker line"),
    pytest.param(b"a: 1\na: 2\n", id="duplicate key"),
    pytest.param(b"a: [1, 2\n", id="syntax error"),
    pytest.param(b"".join(b"  " * i + b"k:\n" for i in range(300)) + b"  " * 300 + b"v\n", id="deeper than MAX_DEPTH"),
    pytest.param(b"a: 1\n" * 1000 + b"b: " + b"x" * 2000 + b"\n", id="long line in a large file"),
])
def test_each_guard_declines_and_parse_file_falls_back_to_libyaml(text):
    assert declined(text)
    assert parse_file("f.yaml", text, "blob") == parse_file_libyaml("f.yaml", text, "blob")


def test_what_only_looks_like_an_indicator_is_not_declined():
    accepted("sql: SELECT * FROM x WHERE a != b\ncron: 0 2 * * *\nn: count(*)\n"
             "url: https://x/?a=1&b=2\nmail: a@b.c\nglob: '*'\nbang: \"!x\"\nfmt: \"%d%%\"\n")
    accepted("a: b # a comment *with* &things @here\nc: 1.5\n")
    accepted("notes: |\n  Steps:\n  * clean\n  * `check` it, @ana\nsql: SELECT\n  * FROM t\n")  # no anchor: no alias
    accepted('msg: "one \\\n  line"\nrun: |\n  make \\\n    all 2>&1 | tee log\n')  # no flow mapping
    accepted("run: |\n  make 2>&1 | tee log\n  [ -f out ] && echo done\n  test \"$a\" != \"\" || exit 1\n")


INDICATOR_CONTEXTS = [
    "a: {}\n", "- {}\n", "[{}]\n", "{{a: {}}}\n", "{}: a\n", "? {}\n", "{}\n", "{{{}: 1}}\n", "[a, {}]\n",
    "a:\n  {}\n", "a: b\n  {}\n", "a: |\n  {}\n", "- a\n{}\n", "a: \"b\n  {}\"\n", "--- {}\n", "a: [b,\n  {}]\n",
    "{{\"a\":{}}}\n", "[a,{}]\n", "- - {}\n", "a: |{}\n  b\n", "a: | {}\n  b\n", "a: > {}\n  b\n", "a: [b]{}\n",
    "a: [b] {}\n", "a: {{b: c}} {}\n", "[[a] {}]\n", "a: b # {}\n", "a: b #{}\n", "a: \"x\" {}\n", "a: 'x' {}\n",
    "a: x] {}\n", "a: x| {}\n", "a: [b]\n{}: 1\n", "a: b{}\n", "a: b {}\n", "a: '{}'\n", "a: \"{}\"\n",
]


@pytest.mark.parametrize("indicator", ["*", "*x", "* x", "&x", "&x y", "&", "!t", "!t y", "!", "!!str x", "@x", "@ x",
                                       "`x", "%x", "%"])
def test_indicators_anywhere_fast_path_declines_or_agrees(indicator):
    for context in INDICATOR_CONTEXTS:
        check(context.format(indicator).encode())


def test_deep_nesting_never_reaches_yaml_rs():
    """yaml-rs crashes the process past ~10,000 levels: such input must be declined before."""
    code = ("from reconciler.core.fastyaml import fast_parse\n"
            "for data in [b'- ' * 50000 + b'a\\n', b'- ? ' * 30000 + b'a\\n', b'[' * 100000, b'{a: ' * 50000,"
            " b''.join(b'  ' * i + b'- k:\\n' for i in range(1500))]:\n"
            "    assert fast_parse('f.yaml', data, '') is None\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "ok\n", (done.returncode, done.stderr[-2000:])


def test_parse_file_uses_the_fast_path_and_reports_errors_through_libyaml(monkeypatch):
    import reconciler.core.yamlload as yamlload

    calls = []
    monkeypatch.setattr(yamlload, "parse_file_libyaml", lambda *args: calls.append(args) or "libyaml")
    assert parse_file("f.yaml", b"a: 1\n", "blob").documents[0].data == {"a": 1}
    assert calls == []
    assert parse_file("f.yaml", b"a: yes\n", "blob") == "libyaml"
    monkeypatch.undo()
    broken = parse_file("f.yaml", b"a: 1\na: 2\n", "blob")
    assert [(d.message, d.line, d.col) for d in broken.diagnostics] == [("duplicate key 'a' (first at line 1)", 2, 1)]
