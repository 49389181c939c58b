"""Where a key path sits in a file: its line and column, found by composing the file again with PyYAML.

Only diagnostics need positions, so PyYAML (with the parsers in core/yamlload.py) is imported when the first
one is placed, not by every process that resolves.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    import yaml
    from yaml.nodes import Node


class YamlLocator:
    """Finds the line and column of a key path by composing the file again (slow path, errors only)."""

    def __init__(self, read: Callable[[str], bytes]):
        self._read = read
        self._files: dict[str, list[Node] | None] = {}

    def _documents(self, file: str) -> list[Node] | None:
        if file not in self._files:
            from .yamlload import compose_documents

            try:
                self._files[file] = compose_documents(self._read(file))
            except Exception:  # unreadable or unparsable: no position to offer
                self._files[file] = None
        return self._files[file]

    def locate(self, file: str, doc_index: int, path: tuple) -> tuple[int, int] | None:
        documents = self._documents(file)
        if documents is None or not 0 <= doc_index < len(documents):
            return None
        node = documents[doc_index]
        mark = node.start_mark
        for step in path:
            found = _step(node, step)
            if found is None:
                break
            mark, node = found
        return mark.line + 1, mark.column + 1


def _step(node: Node, step, merging: frozenset = frozenset()) -> tuple[yaml.Mark, Node] | None:
    """(mark to report, child node) one key or index down; a mapping entry reports its key's mark.
    `merging` holds the mappings whose `<<` sources are being searched, against merge cycles."""
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode  # imported already: a node was composed

    from .yamlload import MERGE_TAG

    if isinstance(node, SequenceNode):
        if isinstance(step, int) and not isinstance(step, bool) and 0 <= step < len(node.value):
            item = node.value[step]
            return item.start_mark, item
        return None
    if not isinstance(node, MappingNode):
        return None
    wanted = str(step) if isinstance(step, int) and not isinstance(step, bool) else step
    merged = []
    for key_node, value_node in node.value:
        if key_node.tag == MERGE_TAG:
            merged.append(value_node)
        elif isinstance(key_node, ScalarNode) and key_node.value == wanted:
            return key_node.start_mark, value_node
    merging = merging | {id(node)}
    for source in merged:
        for candidate in (source.value if isinstance(source, SequenceNode) else [source]):
            if isinstance(candidate, MappingNode) and id(candidate) not in merging:
                found = _step(candidate, step, merging)
                if found is not None:
                    return found
    return None
