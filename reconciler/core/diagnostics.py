"""Diagnostics are values: collected, sorted and reported together, never raised one by one.

A diagnostic names its place (file, line, column) and, where the place is only
known as a key path inside a document, carries that path until the resolver
maps it to a line with the loader's `Locator`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

ERROR = "error"
WARNING = "warning"

KeyPath = tuple  # tuple[str | int, ...]: keys and list indexes inside one YAML document


@dataclass(frozen=True)
class Diagnostic:
    severity: str
    message: str
    file: str | None = None
    line: int | None = None  # 1-based
    col: int | None = None  # 1-based
    hint: str | None = None
    # key path inside document `doc_index` of `file`, for diagnostics whose line is not known yet
    path: KeyPath | None = None
    doc_index: int | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def at(self, file: str | None = None, line: int | None = None, col: int | None = None) -> "Diagnostic":
        return replace(self, file=file or self.file, line=line or self.line, col=col or self.col)

    def render(self) -> str:
        place = ""
        if self.file:
            place = self.file
            if self.line:
                place += f":{self.line}"
                if self.col:
                    place += f":{self.col}"
            place += ": "
        text = f"{place}{self.severity}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def to_json(self) -> dict:
        return {
            "severity": self.severity,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "hint": self.hint,
        }

    def sort_key(self):
        return (self.file or "", self.line or 0, self.col or 0, self.message)

    def to_data(self) -> tuple:
        """Every field as a plain tuple (what caches and snapshots store); `Diagnostic(*data)` is the inverse."""
        return (self.severity, self.message, self.file, self.line, self.col, self.hint, self.path, self.doc_index)


def error(message: str, file: str | None = None, line: int | None = None, col: int | None = None,
          hint: str | None = None, path: KeyPath | None = None, doc_index: int | None = None) -> Diagnostic:
    return Diagnostic(ERROR, message, file, line, col, hint, path, doc_index)


def warning(message: str, file: str | None = None, line: int | None = None, col: int | None = None,
            hint: str | None = None, path: KeyPath | None = None, doc_index: int | None = None) -> Diagnostic:
    return Diagnostic(WARNING, message, file, line, col, hint, path, doc_index)


@dataclass
class Diagnostics:
    items: list[Diagnostic] = field(default_factory=list)

    def add(self, d: Diagnostic) -> None:
        self.items.append(d)

    def extend(self, ds: Iterable[Diagnostic]) -> None:
        self.items.extend(ds)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.is_error]

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=Diagnostic.sort_key)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class UserError(Exception):
    """Bad input or a refused operation: reported to the user without a traceback (exit 1)."""

    def __init__(self, message: str, diagnostics: Iterable[Diagnostic] = (), hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.diagnostics = list(diagnostics)
        self.hint = hint
