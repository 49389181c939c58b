"""A fast path for `yamlload.parse_file`: the Rust parser yaml-rs behind guards.

yaml-rs reads YAML 1.2 several times faster than libyaml, but our semantics are
YAML 1.1's (PyYAML's SafeLoader minus timestamps, strict duplicate keys): plain
`yes` is a bool, `0755` octal, `1e3` a string and `1:20` the number 80 for us,
and yaml-rs also ignores tags, treats `<<` as a plain key and accepts some
input libyaml rejects. `fast_parse` returns a `FileResult` only when it can
show the result is exactly the one libyaml's path would build, and None
("declined") otherwise; `parse_file` then takes the libyaml path, which stays
the single source of truth for every error and position.

Why a result that gets through is libyaml's:

* Bytes: no control characters, tabs or DEL; valid UTF-8 without C1 controls,
  NEL/LS/PS (line breaks in YAML 1.1 only), U+FFFE, U+FFFF or a BOM past the
  first character; `\\r` only in `\\r\\n`; no `...` line; without a line break
  at the end, no block scalar ending the file and no last line of spaces
  (the two chomp those apart). The readers differ there, and all of it is
  rare in artefact files.
* Indicators: `&`, `!` and `%` never where a token could start (only after
  a character that continues a scalar or comment on the same line, like
  `a != b` or `2>&1`): no anchors, tags or directives. Without anchors every
  alias is an error for both parsers, as are `@` and backquote starting a
  token, so nothing is expanded, merged or retagged, yaml-rs's alias limits
  never matter, and `*`, `@` and backquote may appear anywhere.
* Flow collections: libyaml rejects `x:` followed by `,?[]{}`, a line starting
  with `:` (a value on a later line than its key) and flow mapping keys
  spanning lines, which yaml-rs reads; files with the first two are declined,
  and so are keys holding a space or line break, and escaped line breaks, in
  files with a flow mapping.
* Documents: a `---` at column 0 followed by a space, line break or the end is
  always a document marker, so the file is split there and each part parsed
  alone (yaml-rs answers a list both for one list document and for a stream);
  the part before the first marker is a document only if it has content, as
  in libyaml, and a list document must start with `-` or `[`. A mapping
  document's line is its first content line. Scalar documents are declined
  (`--- >` at column 0 is an error for libyaml only).
* Strings: a string yaml-rs returns may have been a plain scalar. It is
  declined when YAML 1.1 would read that text, plain, as something other than
  a string while yaml-rs keeps it a string (yes, no, on, off, `1:20`, `<<`,
  `=`), and when it starts with an indicator (`?x` is a key and `:x`, `|x` are
  errors in libyaml's flow collections) or a line break (empty block scalars
  at the end). When yaml-rs itself reads the plain text as a number, bool or
  null (`"1000"`, `"true"`), the string was quoted: YAML 1.1 agrees.
* Numbers: a plain token yaml-rs reads as a number is a run of
  `[A-Za-z0-9_.+-]` that starts with a digit, `.` or `_` (after an optional
  sign) right after a space, line break, flow indicator, `:`, `?` or quote.
  Every such run in the file is checked (once, then remembered) against both
  parsers' reading of the same plain text, and any disagreement (`0755`,
  `1e3`, `_0`, `+.5`, `0o7`) declines. Runs inside quoted strings or comments
  are checked too, which can only decline more.
* Keys: strings only (with the string check); duplicates are yaml-rs errors.
* Depth: yaml-rs recurses on the C stack and crashes the process past ~10,000
  levels, so a file is only given to it when its size, or its longest line,
  bounds the nesting far below that; documents nested more than `MAX_DEPTH`
  levels are declined.
* Anything yaml-rs raises declines.

`tests/unit/test_fastyaml.py` holds the differential proof. Keys are interned,
as the libyaml builder interns them: cached documents share key strings.
"""
from __future__ import annotations

import re
from sys import intern

import yaml_rs

from .documents import Document, FileResult

MAX_DEPTH = 200  # deeper documents go through libyaml (and its RecursionError fallback)
# yaml-rs crashed the process here between 8,000 and 12,000 levels (8 MB stacks, main thread or
# not). Block nesting takes ~2 characters a level (`- - - x`) or at most ~2 levels a column of
# indentation, and yaml-rs refuses deep flow nesting itself: a file is only given to it when it is
# small or has no long line, which keeps it under ~2,500 levels.
_SMALL = 4096
_MAX_LINE = 1000
_CACHE_MAX = 50_000  # entries per verdict cache
_CACHE_TEXT_MAX = 64  # longer texts are checked every time, not remembered

_loads = yaml_rs.loads

# Bytes a file may hold: printable ASCII, LF, CR and the bytes of multi-byte UTF-8 sequences
# (which characters those encode is checked on the decoded text).
_ALLOWED_BYTES = bytes(range(0x20, 0x7F)) + b"\n\r" + bytes(range(0x80, 0x100))
_BAD_CHARS = re.compile("[\x80-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
_COLON_BEFORE_FLOW = re.compile(rb":[,?\[\]{}]")
_AT_LINE_START = re.compile(rb"\n(?: *:|\.\.\.)")

# Indicators that must not start a token. Before one, skipping spaces, any of these characters
# (or the start of the file) means it might. After any other character it continues the scalar
# or comment that character is in (an indicator there would have been declined itself), or it
# follows a closed scalar, flow collection or block scalar header on the same line, an error
# for both parsers: `SELECT a & b`, `2>&1`, `[ -f x ] && y`, `a != b`, `x@y`, `"%d"`.
# `*`, `@` and backquote need no look: without an anchor anywhere an alias is an error for both
# ("undefined alias", "unknown anchor"), and so are the reserved `@` and backquote at a token's
# start; elsewhere (`* item` or a backquoted word starting a line of a block scalar) both read
# them as text.
_TOKEN_INDICATORS = (b"&", b"!", b"%")
_MAY_PRECEDE_TOKEN = frozenset(b"\n\r-?:,[{")

# Number tokens: one class per byte, runs found with bytes.find on the classes.
# b: may precede a plain scalar; d: digit . _ (a number's first character); s: sign; o: other.
_CLASSES = bytearray(b"o" * 256)
for _c in b" \n\r[]{},:?\"'":
    _CLASSES[_c] = ord("b")
for _c in b"0123456789._":
    _CLASSES[_c] = ord("d")
for _c in b"+-":
    _CLASSES[_c] = ord("s")
_CLASSES = bytes(_CLASSES)
_TOKEN_RUN = re.compile(rb"[A-Za-z0-9_.+-]+")

# First characters of strings that need a look (see the module docstring); the rest are safe.
_INDICATOR_FIRST = frozenset(":?|>#,[]{}'\"\n")
_RISKY_FIRST = frozenset("0123456789+-.yYnNoO<=~") | _INDICATOR_FIRST
_STR_TAG = "tag:yaml.org,2002:str"

_NUMBER_SAME: dict[bytes, bool] = {}  # token -> both parsers read it alike (or yaml-rs not as a number)
_STRING_RISK: dict[str, bool] = {}  # string -> declined (see _plain_string_differs)
_KEYS: dict[str, str] = {}  # checked key -> its interned copy


class _Decline(Exception):
    pass


def fast_parse(path: str, data: bytes, blob_id: str) -> FileResult | None:
    """The `FileResult` libyaml's path would give for `data`, or None when that cannot be shown."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a leading byte order mark is not content for libyaml either
    if data.translate(None, _ALLOWED_BYTES):
        return None  # control characters, tabs, DEL
    if data.isascii():
        text = data.decode("ascii")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if _BAD_CHARS.search(text):
            return None
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        return None
    unterminated = data and data[-1] != 10  # no line break at the end
    if unterminated and not data[data.rfind(b"\n") + 1:].strip(b" "):
        return None  # a last line of spaces: libyaml and yaml-rs chomp a block scalar before it apart
    if _COLON_BEFORE_FLOW.search(data) or _AT_LINE_START.search(data) or data.startswith((b":", b"...")):
        return None
    for indicator in _TOKEN_INDICATORS:
        if indicator in data and _may_start_token(data, indicator):
            return None
    # libyaml rejects flow mapping keys that span lines (yaml-rs reads them): with a flow mapping
    # in the file, keys holding a space or line break are declined, and escaped line breaks.
    flow_mapping = b"{" in data and _may_start_token(data, b"{")
    if flow_mapping and (b"\\\n" in data or b"\\\r" in data):
        return None
    if len(data) > _SMALL and max(map(len, data.split(b"\n"))) > _MAX_LINE:
        return None
    state = [False, flow_mapping, None]  # [a number was read, keys with a space are suspect, last value]
    try:
        documents = _documents(path, text, blob_id, state)
        if state[0] and not _numbers_agree(data):
            return None
        if unterminated and _ends_with_line_break(state[2]):
            return None  # a block scalar ended by the end of the file: libyaml has no line break to keep
    except Exception:  # _Decline, or anything unforeseen: declining is always safe
        return None
    return FileResult(path, blob_id, documents)


def _may_start_token(data: bytes, indicator: bytes) -> bool:
    at = data.find(indicator)
    while at != -1:
        before = at - 1
        while before >= 0 and data[before] == 32:
            before -= 1
        if before < 0 or data[before] in _MAY_PRECEDE_TOKEN:
            return True
        at = data.find(indicator, at + 1)
    return False


def _documents(path: str, text: str, blob_id: str, state: list) -> list[Document]:
    if not (text.startswith("---") or "\n---" in text):
        bounds = [(0, len(text))]
        markers = []
    else:
        markers = _markers(text)
        bounds = list(zip(markers, markers[1:] + [len(text)]))
        if not markers or markers[0]:
            bounds.insert(0, (0, markers[0] if markers else len(text)))
    documents = []
    index = 0
    line = 1  # of the part's first character
    for start, end in bounds:
        part = text[start:end] if end - start < len(text) else text
        marked = start in markers
        value = state[2] = _parse(part)
        content, first = _content(part, marked)
        if not content and not marked:
            if value is not None:
                raise _Decline  # libyaml sees no document here
        elif marked and content == 1 and first not in ("{", "["):
            raise _Decline  # content on the marker line: only flow collections are let through
        elif type(value) is dict:
            if not content:
                raise _Decline
            documents.append(Document(path, index, line + content - 1, _mapping(value, 0, state), blob_id))
            index += 1
        elif type(value) is list:  # not kept, but it must be free of errors too
            if first not in ("-", "["):
                raise _Decline  # one list document, not several documents yaml-rs would answer as a list
            _sequence(value, 0, state)
            index += 1
        elif value is None:
            index += 1
        else:
            raise _Decline  # scalar documents: libyaml and yaml-rs disagree on some (`--- >` at column 0)
        if markers:
            line += part.count("\n")
    return documents


def _ends_with_line_break(value) -> bool:
    """Whether the file's last scalar (the last key or value, all the way down) ends with a line break."""
    while True:
        if type(value) is dict:
            if not value:
                return False
            key = next(reversed(value))
            if type(key) is str and key.endswith("\n"):
                return True
            value = value[key]
        elif type(value) is list:
            if not value:
                return False
            value = value[-1]
        else:
            return type(value) is str and value.endswith("\n")


def _markers(text: str) -> list[int]:
    """Offsets of document start markers: `---` at column 0 followed by a space, a line break or the end."""
    found = []
    at = 0 if text.startswith("---") else text.find("\n---") + 1 or -1
    while at != -1:
        if text[at + 3:at + 4] in ("", " ", "\n", "\r"):
            found.append(at)
        at = text.find("\n---", at + 3) + 1 or -1
    return found


def _content(part: str, marked: bool) -> tuple[int, str]:
    """1-based line (within `part`) and first character of its content; (0, "") when it has none."""
    if not marked and part[:1] not in (" ", "#", "\n", "\r", ""):
        return 1, part[0]
    number = 0
    start = 0
    while start < len(part):
        end = part.find("\n", start)
        if end == -1:
            end = len(part)
        number += 1
        line = part[start + 3:end] if marked and number == 1 else part[start:end]
        stripped = line.strip(" \r")
        if stripped and not stripped.startswith("#"):
            return number, stripped[0]
        start = end + 1
    return 0, ""


def _parse(part: str):
    try:
        return _loads(part, parse_datetime=False)
    except Exception:  # syntax errors, duplicate keys, its own limits: libyaml will say what
        raise _Decline from None


def _mapping(value: dict, depth: int, state: list) -> dict:
    """A copy with interned keys, after checking every key and value (lists are checked in place)."""
    if depth > MAX_DEPTH:
        raise _Decline
    keys = _KEYS
    out = {}
    for key, item in value.items():
        checked = keys.get(key)
        if checked is None:
            checked = _new_key(key, state)
        cls = type(item)
        if cls is str:
            if item[:1] in _RISKY_FIRST and _string_risk(item):
                raise _Decline
        elif cls is dict:
            item = _mapping(item, depth + 1, state)
        elif cls is list:
            _sequence(item, depth + 1, state)
        elif cls is int or cls is float:
            state[0] = True
        elif cls is not bool and item is not None:
            raise _Decline
        out[checked] = item
    return out


def _sequence(value: list, depth: int, state: list) -> None:
    if depth > MAX_DEPTH:
        raise _Decline
    position = 0
    for item in value:
        cls = type(item)
        if cls is str:
            if item[:1] in _RISKY_FIRST and _string_risk(item):
                raise _Decline
        elif cls is dict:
            value[position] = _mapping(item, depth + 1, state)
        elif cls is list:
            _sequence(item, depth + 1, state)
        elif cls is int or cls is float:
            state[0] = True
        elif cls is not bool and item is not None:
            raise _Decline
        position += 1


def _new_key(key, state: list) -> str:
    if type(key) is not str or key[:1] in _RISKY_FIRST and _string_risk(key):
        raise _Decline
    if " " in key or "\n" in key:
        if state[1]:
            raise _Decline  # maybe a flow key spanning lines: an error for libyaml
        return intern(key)  # not remembered: the check depends on the file
    interned = intern(key)
    _remember(_KEYS, interned, interned)
    return interned


def _string_risk(text: str) -> bool:
    risk = _STRING_RISK.get(text)
    if risk is None:
        risk = _plain_string_differs(text)
        _remember(_STRING_RISK, text, risk)
    return risk


def _remember(cache: dict, text, verdict) -> None:
    """Keep a verdict on a short text; a full cache starts over (the same few texts recur)."""
    if len(text) <= _CACHE_TEXT_MAX:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[text] = verdict


def _plain_string_differs(text: str) -> bool:
    """Whether a string yaml-rs returned must be declined (see the module docstring)."""
    if text[:1] in _INDICATOR_FIRST:
        return True
    if _resolve(text) == _STR_TAG:
        return False
    try:
        return type(_loads("k: " + text, parse_datetime=False)["k"]) is str
    except Exception:
        return True


_resolver = None


def _resolve(text: str) -> str:
    """The tag our YAML 1.1 loader's implicit resolvers give the plain scalar `text`."""
    global _resolver
    from yaml.nodes import ScalarNode

    if _resolver is None:
        from .yamlload import ArtefactLoader

        _resolver = ArtefactLoader("")
    return _resolver.resolve(ScalarNode, text, (True, False))


def _numbers_agree(data: bytes) -> bool:
    classes = data.translate(_CLASSES)
    starts = [0] if classes.startswith((b"d", b"sd")) else []
    for pattern in (b"bd", b"bsd"):
        at = classes.find(pattern)
        while at != -1:
            starts.append(at + 1)
            at = classes.find(pattern, at + 2)
    same = _NUMBER_SAME
    for start in starts:
        token = _TOKEN_RUN.match(data, start).group()
        verdict = same.get(token)
        if verdict is None:
            verdict = _same_number(token)
            _remember(same, token, verdict)
        if not verdict:
            return False
    return True


def _same_number(token: bytes) -> bool:
    """Whether the plain scalar `token` reads alike in both parsers, when yaml-rs reads a number."""
    from .yamlload import parse_file_libyaml

    try:
        theirs = _loads("k: " + token.decode("ascii"), parse_datetime=False)["k"]
    except Exception:
        return False
    if type(theirs) is not int and type(theirs) is not float:
        return True  # a string, bool or null for yaml-rs: strings are checked on their own
    ours = parse_file_libyaml("k.yaml", b"k: " + token, "")
    if ours.diagnostics:
        return False
    ours = ours.documents[0].data["k"]
    return type(ours) is type(theirs) and repr(ours) == repr(theirs)
