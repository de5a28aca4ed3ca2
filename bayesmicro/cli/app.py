"""The ``bayesmicro`` command: one module per command, registered here."""

from __future__ import annotations

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
    app()


if __name__ == "__main__":
    main()
