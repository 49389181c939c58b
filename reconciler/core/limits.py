"""How large a file the loader parses, told from its size alone (no YAML parser needed to refuse one)."""
from __future__ import annotations

from .diagnostics import Diagnostic, error

MB = 1024 * 1024
DEFAULT_MAX_BYTES = 10 * MB
DEFAULT_MAX_NODES = 200_000


def _size_text(n: int | float) -> str:
    if n >= MB // 10:
        return f"{n / MB:.1f}".removesuffix(".0") + " MB"
    return f"{int(n)} bytes"


def check_size(path: str, size: int, max_bytes: int = DEFAULT_MAX_BYTES) -> Diagnostic | None:
    """An error for a file too large to parse, decided from its size alone (before reading it)."""
    if size <= max_bytes:
        return None
    return error(f"file is {_size_text(size)}, over the {_size_text(max_bytes)} limit", path, 1, 1,
                 hint="split it into smaller files, or add it to .reconcilerignore if it is not an artefact")
