"""The `tuner` command: every command in the order `tuner --help` lists it, and `main`, which makes errors one line.

Each command lives in the module of its pipeline stage (study, evaluate, ensemble, serve, ...) and
imports the library inside itself, so `tuner --help` and `tuner predict` start fast.
"""

from __future__ import annotations

import gc
import sys

import typer

from tuner.cli.data import datasets
from tuner.cli.ensemble import ensemble_build, ensemble_show
from tuner.cli.evaluate import study_finalize, study_holdout
from tuner.cli.reporting import report, study_plots
from tuner.cli.run_all import run_all
from tuner.cli.serve import export, predict
from tuner.cli.shared import EXIT, errors
from tuner.cli.study import study_delete, study_list, study_run, study_show
from tuner.cli.ui import server, ui
from tuner.core.errors import TunerError
from tuner.core.secrets import redact_url

USAGE_ERROR = 2  # the exit status click gives a usage error (unknown option, missing argument, bad value)

app = typer.Typer(help="Honest hyperparameter search and ensembling for the models of Deep Learning with Python.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
study_app = typer.Typer(help="Run, inspect and delete studies.", no_args_is_help=True)
app.add_typer(study_app, name="study")
ensemble_app = typer.Typer(help="Blend the members of one or more studies.", no_args_is_help=True)
app.add_typer(ensemble_app, name="ensemble")

study_app.command("run")(study_run)
study_app.command("list")(study_list)
study_app.command("show")(study_show)
study_app.command("finalize")(study_finalize)
study_app.command("holdout")(study_holdout)
study_app.command("delete")(study_delete)
study_app.command("plots")(study_plots)
app.command("report")(report)
app.command("export")(export)
app.command("predict")(predict)
ensemble_app.command("build")(ensemble_build)
ensemble_app.command("show")(ensemble_show)
app.command("run-all")(run_all)
app.command("datasets")(datasets)
app.command("ui")(ui)
app.command("server")(server)


def main() -> None:
    """Console entry point: user errors become one line and exit status 2."""
    EXIT.fast_exit_stores = None  # set by the command that may end at once (`run-all`), for this call only
    try:
        code = app(standalone_mode=False)  # Typer returns typer.Exit's code here instead of raising it
        if EXIT.fast_exit_stores is not None:
            EXIT.fast_exit(code if isinstance(code, int) else 0)
        if EXIT.holds_no_store:
            gc.freeze()  # the collector's last pass over pandas', scikit-learn's and XGBoost's objects: 0.4 s
    except TunerError as exc:
        errors.print(f"[red]error:[/] {redact_url(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:  # `study run` and `ensemble build` say more; every command writes atomically
        errors.print("interrupted: nothing half-written was kept; run the same command again")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:  # a declined confirmation
        sys.exit(1)
    except typer.TyperException as exc:  # click's errors (Typer vendors click): standalone_mode=False hands them here
        if exc.exit_code == USAGE_ERROR:  # one line, like every other refusal
            errors.print(f"[red]error:[/] {exc.format_message()} (see --help)", soft_wrap=True)
        else:
            typer.echo(f"Error: {exc.format_message()}", err=True)  # as click shows its other errors
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
