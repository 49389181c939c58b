"""`reconciler init`: writes a new repository from one of the templates shipped in the package.

Templates are plain files under `reconciler/templates/<template>/` (package data).
Substitution is a plain `str.replace` of `{{ name }}` in file contents and of
`__name__` in file and folder names: no template engine, so a template reads like
the files it produces.
"""
from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from reconciler.core.diagnostics import UserError
from reconciler.core.ids import valid_name

NAME_PLACEHOLDER = "{{ name }}"
PATH_PLACEHOLDER = "__name__"
# the templates derive names such as NAME-daily; those must still fit the 63-character rule
LONGEST_SUFFIX = len("-daily")
MAX_NAME_LENGTH = 63 - LONGEST_SUFFIX


def _templates_root() -> Traversable:
    return resources.files("reconciler") / "templates"


def available_templates() -> list[str]:
    return sorted(t.name for t in _templates_root().iterdir()
                  if t.is_dir() and not t.name.startswith(("_", ".")))


def _template_files(folder: Traversable, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Traversable]]:
    """(relative path parts, file) of every file under `folder`, depth first, in name order."""
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__" or entry.name.startswith("."):
            continue
        if entry.is_dir():
            found.extend(_template_files(entry, prefix + (entry.name,)))
        else:
            found.append((prefix + (entry.name,), entry))
    return found


def _check_name(name: str) -> None:
    if not valid_name(name):
        raise UserError(
            f"invalid name {name!r}: a name starts with a lowercase letter and holds only lowercase "
            "letters, digits and '-', at most 63 characters (^[a-z][a-z0-9-]{0,62}$)",
            hint="for example: --name card-payments")
    if len(name) > MAX_NAME_LENGTH:
        raise UserError(
            f"name {name!r} is {len(name)} characters long: at most {MAX_NAME_LENGTH} here, because the "
            f"template derives names such as '{name}-daily' that must stay within 63 characters")


def _check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest} exists and is not a directory; choose a new directory")
    if dest.is_dir() and any(dest.iterdir()):
        raise UserError(f"{dest} is not empty; choose a new directory")


def scaffold(dest: Path, template: str, name: str) -> list[Path]:
    """Writes template `template` into `dest` (new or empty) for product `name`; returns the files written."""
    templates = available_templates()
    if template not in templates:
        raise UserError(f"unknown template {template!r}; available templates: {', '.join(templates)}")
    _check_name(name)
    dest = Path(dest)
    _check_dest(dest)

    written = []
    for parts, source in _template_files(_templates_root() / template):
        target = dest.joinpath(*(p.replace(PATH_PLACEHOLDER, name) for p in parts))
        text = source.read_text(encoding="utf-8").replace(NAME_PLACEHOLDER, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
