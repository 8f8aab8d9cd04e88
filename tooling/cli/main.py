"""The ``pooch`` command. Each command group lives in its own module and is added here."""

from __future__ import annotations

import typer

from tooling.cli.collector import collector
from tooling.cli.demo import demo
from tooling.cli.featurizer import featurizer_app
from tooling.cli.models import experiments, models_app, supervisor
from tooling.cli.scorer import scorer_app
from tooling.cli.simulate import simulate
from tooling.cli.stack import stack_app
from tooling.cli.topics import topics_app
from tooling.cli.trainer import trainer_app

app = typer.Typer(
    name="pooch",
    help="Pooch Predictor: reactive ML over Kafka. Predicts likes of pupdates.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.command("demo")(demo)
app.command("simulate")(simulate)
app.command("collector")(collector)
app.add_typer(featurizer_app, name="featurizer")
app.add_typer(trainer_app, name="trainer")
app.add_typer(scorer_app, name="scorer")
app.command("supervisor")(supervisor)
app.add_typer(models_app, name="models")
app.command("experiments")(experiments)


if __name__ == "__main__":
    app()
