"""All human and machine rendering: diagnostics, plans (text, markdown, json), tables, apply results."""
from __future__ import annotations

import json
import sys

from reconciler.core.jsontext import dumps_indented
from reconciler.core.plan import DELETE, KEEP, REPLACE, UPDATE, CREATE, Plan
from reconciler.core.redact import redact, redact_path

COLOURS = {CREATE: "green", UPDATE: "yellow", REPLACE: "magenta", DELETE: "red", KEEP: "cyan",
           "error": "red", "warning": "yellow", "Ready": "green", "Failed": "red", "Blocked": "yellow",
           "Deleted": "red", "Applying": "blue", "Deleting": "red", "Pending": "blue"}


class Out:
    """Writes plain text, or rich markup when stdout is a terminal."""

    def __init__(self, stream=None, colour: bool | None = None):
        self.stream = stream or sys.stdout
        self.colour = self.stream.isatty() if colour is None else colour
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, soft_wrap=True)
        return self._console

    def line(self, text: str = "", style: str | None = None) -> None:
        if self.colour and style:
            from rich.markup import escape

            self.console.print(f"[{style}]{escape(text)}[/]")
        elif self.colour:
            from rich.markup import escape

            self.console.print(escape(text))
        else:
            self.stream.write(text + "\n")

    def lines(self, lines: list[tuple[str, str | None]]) -> None:
        """`line` of each (text, style); without colour in one write (a 10,000-action plan made 10,000)."""
        if self.colour:
            for text, style in lines:
                self.line(text, style)
        elif lines:
            self.stream.write("\n".join(text for text, _ in lines) + "\n")

    def json(self, data) -> None:
        self.stream.write(dumps_indented(data) + "\n")


def short(commit: str | None) -> str:
    return commit[:8] if commit else "worktree"


def fmt_value(v) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else json.dumps(v)
    return s if len(s) <= 120 else s[:117] + "..."


# -- diagnostics ---------------------------------------------------------------------------
def diagnostics(out: Out, diags) -> None:
    if not out.colour:
        # one write: stderr is line-buffered, and a large repository may have thousands of warnings
        text = "".join(d.render() + "\n" for d in diags)
        if text:
            out.stream.write(text)
        return
    for d in diags:
        text = d.render()
        first, _, rest = text.partition("\n")
        out.line(first, COLOURS.get(d.severity))
        if rest:
            out.line(rest)


# -- plans ---------------------------------------------------------------------------------
def summary_line(plan: Plan) -> str:
    c = plan.counts()
    text = (f"Plan: {c[CREATE]} to create, {c[UPDATE]} to update, {c[REPLACE]} to replace, "
            f"{c[DELETE]} to delete")
    if c[KEEP]:
        text += f", {c[KEEP]} kept"
    return text + "."


def plan_text(out: Out, plan: Plan) -> None:
    where = f"commit {short(plan.commit)}"
    if plan.base:
        where += f" against {plan.base}"
    else:
        where += f", state serial {plan.state_serial}"
    if not plan.actions:
        out.line(f"No changes. The recorded state matches {where}.", "green")
        return
    if not plan.has_changes:
        out.line(f"No changes to apply ({where}).", "green")
    else:
        out.line(f"Reconciler will perform these actions ({where}):")
    out.line()
    width = max(len(a.id) for a in plan.actions)
    lines: list[tuple[str, str | None]] = []
    for a in plan.actions:
        lines.append((f"  {a.symbol:>3} {a.id:<{width}}  {a.reason}", COLOURS[a.action]))
        for c in a.changes:
            before = fmt_value(redact_path(c.path, c.before))
            after = fmt_value(redact_path(c.path, c.after))
            if c.kind == "added":
                lines.append((f"        + {c.path}: {after}", "green"))
            elif c.kind == "removed":
                lines.append((f"        - {c.path}: {before}", "red"))
            else:
                lines.append((f"        ~ {c.path}: {before} -> {after}", "yellow"))
    out.lines(lines)
    if plan.access:
        access_text(out, plan.access)
    out.line()
    out.line(summary_line(plan), "bold")
    if plan.held:
        out.line(f"Held: {plan.held}", "red")


# -- access diff -----------------------------------------------------------------------------
ACCESS_SYMBOLS = {"gain": "+", "lose": "-", "mask+": "~", "mask-": "~", "filter": "~"}
ACCESS_COLOURS = {"+": "green", "-": "red", "~": "yellow"}
MAX_ACCESS_LINES = 200  # in text and markdown; -o json always holds every change


def access_text(out: Out, access: list[dict]) -> None:
    """The "Access changes:" section: `+` gains, `-` losses, `~` masks and filters that change."""
    out.line()
    out.line("Access changes:")
    width = min(max(len(c["subject"]) for c in access), 40)
    for c in access[:MAX_ACCESS_LINES]:
        symbol = ACCESS_SYMBOLS.get(c["change"], "~")
        out.line(f"  {symbol} {c['subject']:<{width}}  {c['dataset']}: {c['detail']}", ACCESS_COLOURS[symbol])
    if len(access) > MAX_ACCESS_LINES:
        out.line(f"  ... and {len(access) - MAX_ACCESS_LINES} more access changes (`reconciler plan -o json` "
                 f"lists them all)")


def access_markdown(access: list[dict]) -> list[str]:
    lines = ["", f"#### Access changes ({len(access)})", "",
             "| | subject | dataset | change |", "|---|---|---|---|"]
    for c in access[:MAX_ACCESS_LINES]:
        detail = c["detail"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{ACCESS_SYMBOLS.get(c['change'], '~')}` | `{c['subject']}` | `{c['dataset']}` | {detail} |")
    if len(access) > MAX_ACCESS_LINES:
        lines += ["", f"... and {len(access) - MAX_ACCESS_LINES} more; the plan's JSON lists them all."]
    return lines


MAX_MARKDOWN = 65_000


def plan_markdown(plan: Plan, title: str | None = None) -> str:
    title = title or f"Reconciler plan for `{short(plan.commit)}`" + (f" against `{plan.base}`" if plan.base else "")
    lines = [f"### {title}", "", f"**{summary_line(plan)}**", ""]
    if plan.held:
        lines += [f"> :warning: **Held:** {plan.held}", ""]
    errors = [d for d in plan.diagnostics if d["severity"] == "error"]
    if errors:
        lines += [f"**{len(errors)} error(s):**", "", "```"]
        lines += [_diag_line(d) for d in errors]
        lines += ["```", ""]
    if not plan.actions:
        lines.append("No changes.")
        return "\n".join(lines) + "\n"
    lines += ["| | resource | reason |", "|---|---|---|"]
    for a in plan.actions:
        lines.append(f"| `{a.symbol}` | `{a.id}` | {a.reason.replace('|', '/')} |")
    if plan.access:
        lines += access_markdown(plan.access)
    detailed = [a for a in plan.actions if a.changes]
    if detailed:
        lines += ["", "<details><summary>Field-level changes</summary>", "", "```diff"]
        for a in detailed:
            lines.append(f"{a.symbol} {a.id}")
            for c in a.changes:
                b, af = fmt_value(redact_path(c.path, c.before)), fmt_value(redact_path(c.path, c.after))
                if c.kind == "added":
                    lines.append(f"+   {c.path}: {af}")
                elif c.kind == "removed":
                    lines.append(f"-   {c.path}: {b}")
                else:
                    lines.append(f"-   {c.path}: {b}")
                    lines.append(f"+   {c.path}: {af}")
        lines += ["```", "", "</details>"]
    text = "\n".join(lines) + "\n"
    if len(text) > MAX_MARKDOWN:
        head = "\n".join(lines[:4])
        text = head + "\n\nThe plan is too long for one comment; the full plan is kept in the plan file.\n"
    return text


def _diag_line(d: dict) -> str:
    place = d.get("file") or ""
    if d.get("line"):
        place += f":{d['line']}" + (f":{d['col']}" if d.get("col") else "")
    return f"{place}: {d['severity']}: {d['message']}" if place else f"{d['severity']}: {d['message']}"


def plan_json(plan: Plan) -> dict:
    data = plan.to_json()
    for a in data["actions"]:
        if "resource" in a:
            a["resource"]["spec"] = redact(a["resource"]["spec"])
        for c in a["changes"]:
            c["before"] = redact_path(c["path"], c["before"])
            c["after"] = redact_path(c["path"], c["after"])
    return data


# -- tables --------------------------------------------------------------------------------
def table(out: Out, columns: list[str], rows: list[list[str]], empty: str = "No resources found.") -> None:
    if not rows:
        out.line(empty)
        return
    if out.colour:
        from rich import box
        from rich.table import Table

        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for c in columns:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*[_styled(c, v) for c, v in zip(columns, r)])
        out.console.print(t)
        return
    widths = [max(len(c), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    out.line("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for r in rows:
        out.line("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


def _styled(column: str, value: str):
    from rich.text import Text

    style = COLOURS.get(value) if column in ("PHASE", "HEALTH") else None
    return Text(str(value), style=style or "")
