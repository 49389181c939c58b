"""The `reconciler` command. Heavy modules are imported inside commands so `--help` stays fast."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from reconciler.core.diagnostics import UserError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class State:
    debug = False


def target_options(f):
    f = click.option("--path", "paths", multiple=True, metavar="PATH",
                     help="Only read artefacts under PATH (repeatable; default: the whole tree).")(f)
    f = click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="State directory (default: .reconciler/ here, or $RECONCILER_STATE_DIR).")(f)
    f = click.option("--ref", default=None, help="Git ref to read (default: the branch head).")(f)
    f = click.option("--repo", default=".", show_default=True,
                     help="Repository: a path (git work tree, bare repo or plain folder) or a URL.")(f)
    return f


def config_option(f):
    """`--config`: the instance's reconciler.yaml, whose users and groups policies are checked against."""
    return click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        envvar="RECONCILER_CONFIG", show_envvar=True,
                        help="The instance config (reconciler.yaml): policies naming users or groups it does not "
                             "know are errors, and plan's access diff reports on each of its users.")(f)


def make_target(repo, ref, state_dir, paths, config_file=None):
    from reconciler.engine.operations import Target

    t = Target(repo=repo, ref=ref, paths=list(paths) or None)
    if state_dir is not None:
        t.state_dir = Path(state_dir).absolute()
    if config_file is not None:
        from reconciler.engine.access_plan import InstanceSubjects

        t.subjects = InstanceSubjects.load(config_file)
    return t


@click.group(context_settings=CONTEXT)
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.version_option(package_name="reconciler")
def cli(debug):
    """Reconciler: a GitOps control plane for data products.

    Validate, plan and apply artefacts from a git repository; inspect and delete what was applied.
    """
    State.debug = debug


def main():
    from reconciler.store.writebehind import finish, settle

    try:
        _main()
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            finish(e.code or 0)  # caches on disk; a one-shot command leaves without tearing down (writebehind.py)
        raise
    finally:
        settle()


def _main():
    try:
        code = cli.main(standalone_mode=False, prog_name="reconciler")
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(1 if e.exit_code == 2 else e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except UserError as e:
        report_user_error(e)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # a bug: say so plainly, traceback only with --debug
        if State.debug or os.environ.get("RECONCILER_DEBUG"):
            raise
        click.echo(f"internal error: {type(e).__name__}: {e}\n(run with --debug for a traceback; please report it)",
                   err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def report_user_error(e: UserError) -> None:
    from reconciler.cli.render import Out, diagnostics

    out = Out(sys.stderr)
    diagnostics(out, e.diagnostics)
    out.line(f"error: {e.message}", "red")
    if e.hint:
        out.line(f"  hint: {e.hint}")


def _register():
    from reconciler.cli import commands  # noqa: F401  (registers the commands on `cli`)
    from reconciler.cli import dev_cmd  # noqa: F401  (`reconciler dev`)
    from reconciler.cli import query_cmd  # noqa: F401  (`reconciler query`)


_register()
