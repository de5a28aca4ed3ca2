"""The ``bayesmicro`` command: one module per command, registered here. Command modules import only typer, rich, the
standard library, ``bayesmicro.methods`` and ``bayesmicro.config`` at module level, so ``--help`` and ``--version``
start without torch; each command body imports what its work needs."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from bayesmicro import __version__
from bayesmicro.cli import bench as bench_cmd
from bayesmicro.cli import diagnose as diagnose_cmd
from bayesmicro.cli import embed as embed_cmd
from bayesmicro.cli import eval as eval_cmd
from bayesmicro.cli import export as export_cmd
from bayesmicro.cli import fit as fit_cmd
from bayesmicro.cli import fit_comparisons as fit_comparisons_cmd
from bayesmicro.cli import fit_streamed as fit_store_cmd
from bayesmicro.cli import route as route_cmd
from bayesmicro.cli import score as score_cmd
from bayesmicro.cli.common import set_global_threads

app = typer.Typer(
    name="bayesmicro",
    help="Personalized reward modeling with Bayesian mixtures of Bradley–Terry heads (MiCRo on Pyro).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"bayesmicro {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads for the command (default 1: "
                                          "faster for the small matmuls of these models; embed: torch's choice).",
                                          envvar="BAYESMICRO_THREADS"),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_version,
                                 is_eager=True),
) -> None:
    """Personalized reward modeling with Bayesian mixtures of Bradley–Terry heads (MiCRo on Pyro)."""
    if threads is not None and threads < 1:
        print(f"error: --threads must be ≥ 1, got {threads}", file=sys.stderr)
        raise typer.Exit(2)
    set_global_threads(threads)


app.command("fit")(fit_cmd.fit_command)
app.command("fit-vi")(fit_cmd.fit_vi_command)
app.command("fit-nuts")(fit_cmd.fit_nuts_command)
app.command("fit-store")(fit_store_cmd.fit_store_command)
app.command("fit-comparisons")(fit_comparisons_cmd.fit_comparisons_command)
app.command("eval")(eval_cmd.eval_command)
app.command("embed")(embed_cmd.embed_command)
app.command("score")(score_cmd.score_command)
app.command("diagnose")(diagnose_cmd.diagnose_command)
app.command("bench")(bench_cmd.bench_command)
app.command("export")(export_cmd.export_command)
app.command("route")(route_cmd.route_command)


def main() -> None:
    """Run the app; a usage error (an unknown option, a value of the wrong type) is one line and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except Exception as exc:  # typer's (vendored Click's) usage errors: not part of its public API, so by shape
        message, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
        if not callable(message) or not isinstance(code, int):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `bayesmicro` alone: the help, as typer shows it
            app()
        print(f"error: {' '.join(str(message()).split())}", file=sys.stderr)
        sys.exit(code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
