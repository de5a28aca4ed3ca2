"""The ``bayesmicro`` command: one module per command, registered here."""

from __future__ import annotations

import sys

import typer

from bayesmicro.cli import embed as embed_cmd
from bayesmicro.cli import bench as bench_cmd
from bayesmicro.cli import eval as eval_cmd
from bayesmicro.cli import diagnose as diagnose_cmd
from bayesmicro.cli import export as export_cmd
from bayesmicro.cli import fit as fit_cmd
from bayesmicro.cli import score as score_cmd
from bayesmicro.cli import route as route_cmd

app = typer.Typer(
    name="bayesmicro",
    help="Personalized reward modeling with Bayesian mixtures of Bradley–Terry heads (MiCRo on Pyro).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("fit")(fit_cmd.fit_command)
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
