"""The ``mxcat`` command line.

Every :class:`mxcat.errors.MxcatError` ends the command with a one-line message on stderr and the
exit code of its class (see :data:`mxcat.errors.EXIT_CODES`); ``--debug`` adds the traceback. Any
other exception is a bug and exits with 70.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.markup import escape

from mxcat import __version__
from mxcat.errors import InternalError, MxcatError

app = typer.Typer(
    name="mxcat",
    help="Key-value metadata for macromolecular crystallography, described by the mmCAT ontology.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


class _State:
    debug = False
    config: str | None = None


state = _State()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mxcat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logging."),
    config: str = typer.Option(None, "--config", "-c", help="Configuration file (default: $MXCAT_CONFIG or ~/.config/mxcat/config.yaml)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    state.debug = debug
    state.config = config
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from mxcat.cli import adapters, catalogue, demo, icat, live, ontology

    app.add_typer(ontology.app, name="ontology")
    app.add_typer(catalogue.outbox_app, name="outbox")
    app.add_typer(catalogue.config_app, name="config")
    app.add_typer(adapters.adapters_app, name="adapters")
    app.add_typer(icat.app, name="icat")
    app.command("demo")(demo.demo)
    app.command("ingest")(adapters.ingest)
    app.command("parse")(adapters.parse_cmd)
    app.command("analyse")(adapters.analyse_cmd)
    app.command("simulate")(adapters.simulate_cmd)
    app.command("live")(live.live)
    app.command("push")(catalogue.push)
    app.command("show")(catalogue.show)
    app.command("query")(catalogue.query)
    app.command("deliver")(catalogue.deliver)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    if argv is not None:
        state.debug = "--debug" in argv
    else:
        state.debug = "--debug" in sys.argv[1:]
    try:
        app(args=argv)
    except MxcatError as err:
        if state.debug:
            err_console.print_exception()
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the last line of defence turns bugs into exit 70
        if state.debug:
            err_console.print_exception()
        wrapped = InternalError(f"{type(err).__name__}: {err} (rerun with --debug and report it)")
        err_console.print(f"[bold red]internal error:[/] {escape(str(wrapped))}", highlight=False, soft_wrap=True)
        sys.exit(InternalError.exit_code)
