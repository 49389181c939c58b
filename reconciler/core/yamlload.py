"""YAML files -> `FileResult`s, fast (libyaml) and strict where PyYAML is lax.

PyYAML keeps the last of two equal keys, turns dates into `datetime` objects
and expands alias bombs without limit; here duplicate keys are errors,
timestamps stay strings (the data must stay JSON-safe) and a document whose
aliases expand past `max_nodes` is refused before it is constructed. Nothing in
this module raises for bad input: every problem becomes a `Diagnostic` with a
position, and a file with any error yields no documents (it is "broken").
"""
from __future__ import annotations

from sys import intern

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .diagnostics import Diagnostic, error
from .documents import PARSER_VERSION, Document, FileResult  # noqa: F401  (PARSER_VERSION: re-exported)
from .fastyaml import fast_parse

# re-exported: the limits and the locator live in modules that do not import PyYAML (a warm plan places no
# diagnostic and parses nothing itself: ~35 ms of imports it need not pay)
from .limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_NODES, MB, check_size  # noqa: E402, F401

TAG = "tag:yaml.org,2002:"
STR_TAG, MAP_TAG, SEQ_TAG = TAG + "str", TAG + "map", TAG + "seq"
TIMESTAMP_TAG, MERGE_TAG, VALUE_TAG = TAG + "timestamp", TAG + "merge", TAG + "value"

# Plain scalar text -> resolved tag, shared by all loaders: keys and common values repeat across
# thousands of files, and resolving each one runs regular expressions.
_PLAIN_TAGS: dict[str, str] = {}
_PLAIN_TAGS_MAX = 50_000


class ArtefactLoader(yaml.CSafeLoader):
    """SafeLoader semantics on libyaml, minus timestamps, plus duplicate-key detection.

    `build_document` replaces PyYAML's generator-based construction with a direct
    walk for the core tags (str, int, float, bool, null, map, seq) and hands any
    other tag to PyYAML's constructors. Duplicate keys are collected in `problems`
    instead of raised, so one pass reports all of them.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != TIMESTAMP_TAG]
        for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream):
        super().__init__(stream)
        self.problems: list[tuple[str, yaml.Mark]] = []
        self.has_merge_keys = False  # a `<<` or `=` key was seen: mappings must be flattened first
        self.shared: dict[int, object] | None = None  # id(node) -> data, while aliases are possible

    def resolve(self, kind, value, implicit):
        if kind is ScalarNode and implicit[0]:
            tag = _PLAIN_TAGS.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if tag == MERGE_TAG or tag == VALUE_TAG:
                    self.has_merge_keys = True
                    return tag  # never cached, so the flag is set for every file that has one
                if len(value) <= 64 and len(_PLAIN_TAGS) < _PLAIN_TAGS_MAX:
                    _PLAIN_TAGS[value] = tag
            return tag
        return super().resolve(kind, value, implicit)

    def construct_timestamp_as_text(self, node):
        return self.construct_scalar(node)

    def build_document(self, node: Node, may_alias: bool):
        self.shared = {} if may_alias else None
        problems_before = len(self.problems)
        try:
            return self._build(node)
        except RecursionError:  # nesting deeper than the stack: PyYAML's construction is iterative
            del self.problems[problems_before:]
            return self.construct_document(node)
        finally:
            self.shared = None
            self.constructed_objects = {}

    def _build(self, node: Node):
        cls = node.__class__
        tag = node.tag
        if cls is ScalarNode:
            if tag == STR_TAG:
                return node.value
            scalar = _SCALAR_CONSTRUCTORS.get(tag)
            return scalar(self, node) if scalar is not None else self.construct_object(node, deep=True)
        shared = self.shared
        if shared is not None and id(node) in shared:
            return shared[id(node)]
        if cls is MappingNode and tag == MAP_TAG:
            data = {}
            if shared is not None:  # registered before the children; check_expansion rules out cycles
                shared[id(node)] = data
            self._fill_mapping(node, data, self._build)
            return data
        if cls is SequenceNode and tag == SEQ_TAG:
            data = [self._build(child) for child in node.value]
        else:
            data = self.construct_object(node, deep=True)
        if shared is not None:
            shared[id(node)] = data
        return data

    def construct_mapping(self, node, deep=False):
        """PyYAML's path (explicitly tagged collections): the same duplicate-key rules."""
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, f"expected a mapping node, but found {node.id}", node.start_mark)
        mapping = {}
        self._fill_mapping(node, mapping, lambda child: self.construct_object(child, deep=deep))
        return mapping

    def _fill_mapping(self, node: MappingNode, mapping: dict, build) -> None:
        own_from = 0
        if self.has_merge_keys:
            self.flatten_mapping(node)
            own_from = node.own_from
        # Keys pulled in by `<<` merges may be overridden; only the mapping's own keys can clash.
        own_keys = set() if own_from else mapping
        for position, (key_node, value_node) in enumerate(node.value):
            if key_node.tag == STR_TAG and key_node.__class__ is ScalarNode:
                key = intern(key_node.value)  # keys repeat in every file: cached and pickled documents share them
            else:
                key = build(key_node)
            if position >= own_from:
                try:
                    clash = key in own_keys
                except TypeError:
                    raise ConstructorError("while constructing a mapping", node.start_mark,
                                           "found an unhashable key (a list or mapping used as a key)",
                                           key_node.start_mark) from None
                if clash:
                    self._note_duplicate(node, own_from, key, key_node)
                elif own_from:
                    own_keys.add(key)
            mapping[key] = build(value_node)

    def flatten_mapping(self, node):
        # Merge sources are flattened in place, possibly before their own construction:
        # remember where each mapping's own keys start, once.
        if not hasattr(node, "own_from"):
            own = sum(1 for key_node, _ in node.value if key_node.tag != MERGE_TAG)
            super().flatten_mapping(node)
            node.own_from = len(node.value) - own

    def _note_duplicate(self, node, own_from, key, key_node):
        first = next(k for k, _ in node.value[own_from:] if self.construct_object(k, deep=True) == key)
        self.problems.append((f"duplicate key '{key}' (first at line {first.start_mark.line + 1})",
                              key_node.start_mark))


ArtefactLoader.add_constructor(TIMESTAMP_TAG, ArtefactLoader.construct_timestamp_as_text)
_SCALAR_CONSTRUCTORS = {
    TAG + "null": lambda loader, node: None,
    TAG + "bool": ArtefactLoader.construct_yaml_bool,
    TAG + "int": ArtefactLoader.construct_yaml_int,
    TAG + "float": ArtefactLoader.construct_yaml_float,
}


class AliasBomb(Exception):
    def __init__(self, message: str, node: Node):
        super().__init__(message)
        self.message = message
        self.node = node


def _children(node: Node):
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return ()


def check_expansion(root: Node, max_nodes: int) -> None:
    """Raise AliasBomb when the document, with every alias expanded, exceeds `max_nodes` nodes
    or contains itself. Aliases share node objects, so sizes are memoised by node identity:
    the walk costs one visit per distinct node, however large the expansion."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path from the root: meeting one again is a cycle
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            sizes[key] = total
            open_nodes.discard(key)
            if total > max_nodes:
                raise AliasBomb(f"document expands to more than {max_nodes} nodes through aliases "
                                "(a YAML alias bomb?)", node)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise AliasBomb("a YAML alias refers to a node that contains it (a recursive structure)", node)
        if isinstance(node, ScalarNode):
            sizes[key] = 1
            continue
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    col = len(data[line_start:offset].decode("utf-8", "replace")) + 1
    return data.count(b"\n", 0, offset) + 1, col


def _reader_error(path: str, data: bytes, exc: yaml.reader.ReaderError) -> Diagnostic:
    line, col = _line_col(data, exc.position)
    if "UTF" in str(exc.reason).upper():
        return error(f"file is not valid UTF-8 text ({exc.reason}: byte 0x{exc.character:02x})", path, line, col,
                     hint="save the file with UTF-8 encoding")
    return error(f"YAML syntax error: {exc.reason} (character 0x{exc.character:02x})", path, line, col,
                 hint=f"remove the invisible control character at line {line}, column {col}")


def _syntax_hint(exc: yaml.MarkedYAMLError, data: bytes, line: int) -> str | None:
    problem = exc.problem or ""
    context = exc.context or ""
    text = _line_text(data, line)
    if "tab" in problem or "\t" in text[: len(text) - len(text.lstrip(" \t"))]:
        return f"YAML indents with spaces; replace the tab at line {line}"
    if "quoted scalar" in context:
        start = exc.context_mark.line + 1 if exc.context_mark else line
        return f"a quoted string is not closed (it starts at line {start})"
    if "mapping values are not allowed" in problem:
        return "a value containing ': ' must be quoted, or this line is indented too far"
    if "could not find expected ':'" in problem:
        return "a key is missing its ':', or a multi-line value is not indented under its key"
    if "did not find expected key" in problem or "expected <block end>" in problem:
        return "check this line's indentation against the lines above it"
    if "did not find expected '-'" in problem:
        return "a list item must start with '- ' at the same indentation as the others"
    if "duplicate anchor" in context:
        return "give each anchor (&name) a distinct name"
    if "undefined alias" in problem:
        return "define the anchor (&name) before using the alias (*name), in the same document"
    if "cannot start any token" in problem:
        return "quote values that start with special characters such as @, ` or %"
    if "could not determine a constructor" in problem:
        return "remove the custom tag (!...) or quote the value"
    if "exceeded maximum nesting depth" in problem:
        return "the document is nested too deeply; flatten it"
    return None


def _marked_error(path: str, data: bytes, exc: yaml.MarkedYAMLError, fallback: Node | None) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark or (fallback.start_mark if fallback is not None else None)
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = exc.problem or exc.context or "invalid YAML"
    if problem == "second occurrence" and exc.context_mark is not None:  # libyaml's duplicate anchor
        problem = f"duplicate anchor (first defined at line {exc.context_mark.line + 1})"
    elif "cannot start any token" in problem:
        problem = f"found character {_char_at(data, line, col)!r} that cannot start any token"
    return error(f"YAML syntax error: {problem}", path, line, col, hint=_syntax_hint(exc, data, line))


def _line_text(data: bytes, line: int) -> str:
    lines = data.split(b"\n", line)
    return lines[line - 1].decode("utf-8", "replace") if 0 < line <= len(lines) else ""


def _char_at(data: bytes, line: int, col: int) -> str:
    text = _line_text(data, line)
    return text[col - 1] if 0 < col <= len(text) else ""


def _failing_scalar(root: Node) -> Node | None:
    """The scalar whose construction raises, found again on the error path only
    (tracking the current node during construction would slow every file down)."""
    probe = ArtefactLoader("")
    stack = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            try:
                probe.construct_object(node, deep=True)
            except Exception:
                return node
        else:
            stack.extend(reversed(_children(node)))
    return None


def parse_file(path: str, data: bytes, blob_id: str, max_bytes: int = DEFAULT_MAX_BYTES,
               max_nodes: int = DEFAULT_MAX_NODES) -> FileResult:
    """Parse every document of one YAML file. Never raises for any input.

    Most files are read by `fastyaml.fast_parse` (a Rust parser behind guards that prove
    its result equal to this module's); whatever it declines, and every file with an
    error, goes through libyaml here, the one source of error messages and positions."""
    too_big = check_size(path, len(data), max_bytes)
    if too_big is not None:
        return FileResult(path, blob_id, diagnostics=[too_big])
    fast = fast_parse(path, data, blob_id)
    if fast is not None:
        return fast
    return parse_file_libyaml(path, data, blob_id, max_bytes, max_nodes)


def parse_file_libyaml(path: str, data: bytes, blob_id: str, max_bytes: int = DEFAULT_MAX_BYTES,
                       max_nodes: int = DEFAULT_MAX_NODES) -> FileResult:
    """`parse_file` through libyaml alone: the reference semantics `fast_parse` must match."""
    result = FileResult(path, blob_id)
    too_big = check_size(path, len(data), max_bytes)
    if too_big is not None:
        result.diagnostics.append(too_big)
        return result
    # Aliases need an anchor in the same document: without both characters there is nothing to expand.
    may_alias = b"&" in data and b"*" in data
    loader = ArtefactLoader(data)
    node = None
    documents = []
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if may_alias:
                check_expansion(node, max_nodes)
            value = loader.build_document(node, may_alias)
            if isinstance(value, dict):
                documents.append(Document(path, index, node.start_mark.line + 1, value, blob_id))
            index += 1
    except yaml.reader.ReaderError as exc:
        result.diagnostics.append(_reader_error(path, data, exc))
    except yaml.MarkedYAMLError as exc:
        result.diagnostics.append(_marked_error(path, data, exc, node))
    except AliasBomb as exc:
        mark = exc.node.start_mark
        result.diagnostics.append(error(exc.message, path, mark.line + 1, mark.column + 1,
                                        hint="expand the anchors by hand, or split the document"))
    except Exception as exc:  # bad explicit tags (!!int x), digit limits...: still the user's input
        culprit = _failing_scalar(node) if node is not None else None
        mark = (culprit or node).start_mark if node is not None else None
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        result.diagnostics.append(error(f"YAML value error: {exc}", path, line, col,
                                        hint="check explicit tags (!!int, !!float, !!binary) and huge numbers"))
    for message, mark in loader.problems:
        result.diagnostics.append(error(message, path, mark.line + 1, mark.column + 1,
                                        hint="remove one of them: YAML keeps only one value per key"))
    if not result.diagnostics:
        result.documents = documents
    return result


def compose_documents(data: bytes) -> list[Node]:
    """Node trees (with positions) of every document of a file; raises yaml.YAMLError."""
    loader = ArtefactLoader(data)
    nodes = []
    while loader.check_node():
        nodes.append(loader.get_node())
    return nodes


from .locate import YamlLocator  # noqa: E402, F401  (re-exported)
