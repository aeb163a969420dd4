"""The `pantau` command line: one verb per job (DESIGN.md §5); exit 0 ok, 1 failed, 2 bad input."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

if TYPE_CHECKING:
    from streams.pipeline import Pipeline
    from streams.settings import Settings

app = typer.Typer(
    name="pantau",
    help="Pantau: fraud and monitoring pipeline for Indonesian payment gateways.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
rules_app = typer.Typer(help="Check, backtest and publish fraud rule packs.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")

err = Console(stderr=True)
EXIT_FAILED = 1
EXIT_USAGE = 2


def usage_error(message: str) -> NoReturn:
    """Stop with exit code 2 and a message that says what and where."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and overrides); a bad value exits 2 naming the field."""
    from streams.settings import Settings

    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        from streams.codec import describe_errors

        usage_error(f"settings: {describe_errors(exc)} (PANTAU_* environment or secrets file)")
    except ValueError as exc:
        usage_error(f"settings: {exc}")


@contextlib.contextmanager
def _secrets_file(path: Path | None) -> Iterator[None]:
    """PANTAU_SECRETS_FILE=path while settings are read, and as it was afterwards."""
    if path is None:
        yield
        return
    previous = os.environ.get("PANTAU_SECRETS_FILE")
    os.environ["PANTAU_SECRETS_FILE"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["PANTAU_SECRETS_FILE"]
        else:
            os.environ["PANTAU_SECRETS_FILE"] = previous


def pipeline_for(
    events: Path, model: Path | None, rules: Path | None, secrets: Path | None, **settings: Any
) -> Pipeline:
    """The pipeline a replay-like verb runs; missing files and bad settings exit 2."""
    from streams.pipeline import build_pipeline

    if not events.exists():
        usage_error(f"{events}: no such file")
    for label, path in (("--model", model), ("--rules", rules), ("--secrets", secrets)):
        if path is not None and not path.exists():
            usage_error(f"{label} {path}: no such file or directory")
    with _secrets_file(secrets):
        loaded = load_settings(model_dir=model, rules_pack=rules, **settings)
    try:
        return build_pipeline(loaded)
    except (ValueError, OSError) as exc:
        usage_error(str(exc))


@app.command()
def replay(
    events: Annotated[Path, typer.Argument(help="JSON-lines file of {topic, value} events")],
    out: Annotated[Path, typer.Option("--out", help="directory for <topic>.jsonl outputs")],
    model: Annotated[Path | None, typer.Option("--model", help="fraud model directory")] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="fraud rule pack file")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="micro-batch size")] = 500,
    secrets: Annotated[
        Path | None,
        typer.Option("--secrets", help="callback secrets file (as PANTAU_SECRETS_FILE)"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run the whole pipeline over a file of events: one JSON-lines file per output topic."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from streams.replay import ReplayInputError
    from streams.replay import replay as run_replay

    pipeline = pipeline_for(events, model, rules, secrets, batch_size=batch_size)
    from streams.gctune import tune_gc

    tune_gc()
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
        transient=True,
    )
    with progress:
        task = progress.add_task("replay", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            result = run_replay(pipeline, events, out, progress=tick)
        except ReplayInputError as exc:
            usage_error(str(exc))
    err.print(
        f"replayed {result.records} events ({result.unreadable} unreadable lines) into {out}/",
        highlight=False,
    )
    for topic, count in sorted(result.written.items()):
        err.print(f"  {topic}.jsonl: {count}", highlight=False)


@app.command()
def schemas(
    out: Annotated[
        Path | None, typer.Option("--out", help="directory (default: models/json_schemas)")
    ] = None,
) -> None:
    """Write the JSON Schema of every topic's values."""
    from models.schemas import DEFAULT_DIR, write_schemas

    for path in write_schemas(out or DEFAULT_DIR):
        err.print(f"wrote {path}", highlight=False)


# ---- simulate (simulator, foundation) -----------------------------------------------------------
@app.command()
def simulate(
    out: Annotated[Path | None, typer.Option("--out", help="replay-format JSON-lines file")] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="also write every transaction's FraudLabel")
    ] = None,
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", help="scenario name (repeatable, or 'all')")
    ] = None,
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
    duration: Annotated[str, typer.Option(help="event time to simulate: 2h, 90m, 1h30m")] = "2h",
    rate: Annotated[
        float, typer.Option(min=0.001, help="transactions per second (daily mean)")
    ] = 20.0,
    start: Annotated[
        str | None, typer.Option(help="ISO start time with offset (default 2026-11-20T16:00Z)")
    ] = None,
    customers: Annotated[int, typer.Option(min=1)] = 200_000,
    merchants: Annotated[int, typer.Option(min=1)] = 200,
    invalid_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of deliberately invalid events")
    ] = 0.0,
    flat: Annotated[bool, typer.Option("--flat", help="no time-of-day traffic pattern")] = False,
    broker: Annotated[
        str | None, typer.Option("--broker", help="Kafka URL to produce to instead of a file")
    ] = None,
    speed: Annotated[
        float | None, typer.Option(min=0.0, help="with --broker: event seconds per wall second")
    ] = None,
    loop: Annotated[bool, typer.Option("--loop", help="with --broker: repeat forever")] = False,
    secrets_file: Annotated[
        Path | None,
        typer.Option("--secrets-file", help="write the simulator's callback secrets (YAML) here"),
    ] = None,
    label_delay: Annotated[
        str | None,
        typer.Option("--label-delay", help="with --labels: label reported this long after (7d)"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Realistic gateway traffic with callbacks, balances and named incident/fraud scenarios."""
    from streams.sim_cli import run_simulate

    run_simulate(
        out=out, labels=labels, scenarios=scenario or [], seed=seed, duration=duration,
        rate=rate, start=start, customers=customers, merchants=merchants,
        invalid_rate=invalid_rate, diurnal=not flat, broker=broker, speed=speed, loop=loop,
        secrets_file=secrets_file, label_delay=label_delay, quiet=quiet,
    )  # fmt: skip


# ---- end simulate -------------------------------------------------------------------------------


# ---- live: worker, embedded broker, demo (foundation) ----------------------------------------


@app.command()
def worker(
    web_port: Annotated[int | None, typer.Option(help="HTTP views port (0: none)")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus /metrics port")] = None,
) -> None:
    """A Faust worker against PANTAU_BROKER (Kafka URL), until Ctrl-C or SIGTERM."""
    settings = load_settings(web_port=web_port, metrics_port=metrics_port)
    from streams.broker import BrokerError
    from streams.worker import ConfigError, run

    try:
        run(settings)
    except ConfigError as exc:
        usage_error(str(exc))
    except BrokerError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None


@app.command()
def broker(
    port: Annotated[int | None, typer.Option(help="port to listen on (default: any free)")] = None,
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, in memory) in the foreground."""
    import signal
    import time

    from streams.broker import BrokerError, EmbeddedBroker

    settings = load_settings()
    embedded = EmbeddedBroker(settings, port=port)
    try:
        embedded.start()
    except BrokerError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:  # a Ctrl-C as soon as the URL is out is a clean stop too
        print(embedded.url, flush=True)
        err.print(
            f"embedded broker on {embedded.url} with {len(settings.topics.all())} topics of "
            f"{settings.partitions} partitions; in memory, lost on exit. Use it with\n"
            f"  PANTAU_BROKER={embedded.url} PANTAU_EMBEDDED=1 pantau worker\nCtrl-C stops it.",
            highlight=False,
        )
        while embedded.alive():
            time.sleep(0.5)
        err.print("[bold red]error:[/] the broker process exited", highlight=False)
        raise typer.Exit(EXIT_FAILED)
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()


@app.command()
def demo(
    duration: Annotated[
        float | None, typer.Option(min=1, help="stop after this many seconds (default: Ctrl-C)")
    ] = None,
    rate: Annotated[float, typer.Option(min=1, max=20000, help="input events per second")] = 200,
    seed: Annotated[int, typer.Option(help="traffic seed")] = 7,
    speed: Annotated[
        float, typer.Option(min=1, max=3600, help="event-time seconds per wall-clock second")
    ] = 30,
) -> None:
    """Embedded broker, a worker and simulated traffic, with a live view; Ctrl-C stops it all."""
    from streams.broker import BrokerError
    from streams.demo import DemoError
    from streams.demo import run as run_demo

    settings = load_settings()
    try:
        view = run_demo(settings, duration=duration, rate=rate, seed=seed, speed=speed)
    except (BrokerError, DemoError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    err.print(view.summary(), highlight=False, soft_wrap=True)
    if view.interrupted:
        raise typer.Exit(130)


# ---- end live ---------------------------------------------------------------------------------


# ---- dashboards and report (dashboards issue) --------------------------------------------------
@app.command()
def dashboards(
    out: Annotated[
        Path | None, typer.Option("--out", help="directory for the generated files")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; exit 1 if the files are stale")
    ] = False,
) -> None:
    """Build the Grafana dashboards and provisioning files (alert rules live beside them)."""
    from dashboards.build import GENERATED, stale, write

    target = out or GENERATED
    if check:
        problems = stale(target)
        for problem in problems:
            err.print(f"stale: {target}/{problem}", highlight=False)
        if problems:
            err.print("run `pantau dashboards` and commit the result", highlight=False)
            raise typer.Exit(EXIT_FAILED)
        err.print(f"{target}/ is up to date", highlight=False)
        return
    changed = write(target)
    for path in changed:
        err.print(f"wrote {path}", highlight=False)
    err.print(f"{len(changed)} file(s) changed in {target}/", highlight=False)


@app.command()
def report(
    events: Annotated[Path, typer.Option("--events", help="JSON-lines file of {topic, value}")],
    out: Annotated[Path, typer.Option("--out", help="directory for the PNG plots")],
    model: Annotated[Path | None, typer.Option("--model", help="fraud model directory")] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="fraud rule pack file")] = None,
    secrets: Annotated[
        Path | None,
        typer.Option("--secrets", help="callback secrets file (as PANTAU_SECRETS_FILE)"),
    ] = None,
) -> None:
    """Replay a file of events and plot it: errors, latency, failovers, settlement, decisions."""
    from streams.replay import ReplayInputError
    from streams.report import render_report

    pipeline = pipeline_for(events, model, rules, secrets)
    try:
        written = render_report(pipeline, events, out)
    except ReplayInputError as exc:
        usage_error(str(exc))
    for path in written:
        err.print(f"wrote {path}", highlight=False)


# ---- end dashboards and report -----------------------------------------------------------------


# ---- fraud: rules check / backtest / publish, train, evaluate (fraud issue) ---------------------


def _fraud_progress(label: str, quiet: bool = False) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        f"[progress.description]{label}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=err, disable=quiet, transient=True,
    )  # fmt: skip


def _checked_pack(path: Path) -> Any:
    """A pack file that passes `rules check`, compiled; exits 2 with its problems otherwise."""
    from rules.check import check_file
    from rules.engine import CompiledPack

    if not path.exists():
        usage_error(f"{path}: no such file")
    result = check_file(path)
    if not result.ok or result.pack is None:
        for problem in result.problems:
            err.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        usage_error(f"{path}: {len(result.problems)} problem(s); the pack was not used")
    return CompiledPack(result.pack)


def _fraud_model(model: Path | None) -> Any:
    from models.artifact import DEFAULT_DIR, MANIFEST, ArtifactError, load_model

    path = model or DEFAULT_DIR
    if model is None and not (DEFAULT_DIR / MANIFEST).exists():
        return None
    try:
        return load_model(path)
    except ArtifactError as exc:
        usage_error(f"--model {path}: {exc}")


@rules_app.command("check")
def rules_check(
    pack: Annotated[Path, typer.Argument(help="rule pack YAML file")],
) -> None:
    """Check a rule pack: syntax, names, types, duplicate ids, and every rule's own examples."""
    from rules.check import check_file

    if not pack.exists():
        usage_error(f"{pack}: no such file")
    try:
        result = check_file(pack)
    except OSError as exc:
        usage_error(f"{pack}: cannot read ({exc.strerror})")
    for note in result.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    if not result.ok:
        for problem in result.problems:
            err.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        usage_error(f"{pack}: {len(result.problems)} problem(s)")
    assert result.pack is not None
    err.print(
        f"{pack}: {result.pack.label} ok: {len(result.pack.rules)} rules, "
        f"{result.examples_run} examples pass",
        highlight=False,
    )


@rules_app.command("backtest")
def rules_backtest(
    pack: Annotated[Path, typer.Argument(help="candidate rule pack YAML file")],
    events: Annotated[Path, typer.Option("--events", help="replay-format events (JSON lines)")],
    labels: Annotated[
        Path | None, typer.Option("--labels", help="FraudLabel lines: precision and recall")
    ] = None,
    against: Annotated[
        Path | None, typer.Option("--against", help="the active pack (default: the shipped one)")
    ] = None,
    model: Annotated[Path | None, typer.Option("--model", help="fraud model directory")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="write the results as CSV")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Decisions under PACK against the active pack over the same replayed history."""
    from rich.console import Console

    from models.history import HistoryError
    from rules.backtest import backtest, render, write_csv
    from rules.pack import DEFAULT_PACK

    candidate = _checked_pack(pack)
    active = _checked_pack(against or load_settings().rules_pack or DEFAULT_PACK)
    for label, path in (("--events", events), ("--labels", labels)):
        if path is not None and not path.exists():
            usage_error(f"{label} {path}: no such file")
    fraud_model = _fraud_model(model)
    with _fraud_progress("backtest", quiet) as progress:
        task = progress.add_task("backtest", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            result = backtest(candidate, active, events, labels=labels, model=fraud_model,
                              progress=tick, partitions=load_settings().scope_partitions())
        except HistoryError as exc:
            usage_error(str(exc))
    out = Console()
    for table in render(result):
        out.print(table)
    if csv_out is not None:
        write_csv(result, csv_out)
        err.print(f"wrote {csv_out}", highlight=False)


@rules_app.command("publish")
def rules_publish(
    pack: Annotated[Path, typer.Argument(help="rule pack YAML file")],
    broker: Annotated[str | None, typer.Option("--broker", help="Kafka URL")] = None,
) -> None:
    """Check a pack, then send it to pantau.rules: running workers switch to it live."""
    import asyncio
    from datetime import UTC, datetime

    from streams.fraud import publish_pack

    compiled = _checked_pack(pack)
    settings = load_settings(broker=broker)
    published = compiled.pack.model_copy(update={"published_at": datetime.now(UTC)})
    try:
        asyncio.run(publish_pack(published, settings.broker, settings.topics.rules))
    except Exception as exc:  # the broker's errors: unreachable, timeouts
        err.print(f"[bold red]error:[/] publishing to {settings.broker}: {exc}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    err.print(
        f"published {published.label} ({len(published.rules)} rules) to {settings.topics.rules}",
        highlight=False,
    )


@app.command()
def train(
    events: Annotated[Path, typer.Argument(help="replay-format events (JSON lines)")],
    labels: Annotated[Path, typer.Option("--labels", help="FraudLabel lines (the targets)")],
    out: Annotated[Path, typer.Option("--out", help="model directory to write")],
    kind: Annotated[str, typer.Option(help="logreg or hgb (gradient boosting)")] = "logreg",
    holdout: Annotated[
        float, typer.Option(min=0.05, max=0.8, help="share of time held out")
    ] = 0.25,
    gap_days: Annotated[
        float | None, typer.Option(help="label-delay gap (default: measured from the labels)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Fit the fraud model on labelled history; write the artifact, model card and curves."""
    from datetime import timedelta

    from models.artifact import ArtifactError
    from models.history import HistoryError
    from models.training import TrainingError
    from models.training import train as run_train

    for label, path in (("EVENTS", events), ("--labels", labels)):
        if not path.exists():
            usage_error(f"{label} {path}: no such file")
    if kind not in {"hgb", "logreg"}:
        usage_error(f"--kind {kind}: must be hgb or logreg")
    gap = timedelta(days=gap_days) if gap_days is not None else None
    with _fraud_progress("features", quiet) as progress:
        task = progress.add_task("features", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            card = run_train(events, labels, out, kind=kind, test_fraction=holdout, gap=gap,
                             progress=tick, partitions=load_settings().scope_partitions())
        except HistoryError as exc:
            usage_error(str(exc))
        except (TrainingError, ArtifactError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(EXIT_FAILED) from None
    h = card["holdout"]
    err.print(
        f"{card['model_version']}: holdout AUC ROC {h['auc_roc']}, average precision "
        f"{h['average_precision']}, precision@100/day {h['precision_at_100_mean']}; wrote {out}/",
        highlight=False,
    )


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="model directory")],
    events: Annotated[Path, typer.Argument(help="replay-format events (JSON lines)")],
    labels: Annotated[Path, typer.Option("--labels", help="FraudLabel lines")],
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Measure a model on labelled events: AUC ROC, average precision, precision@100 per day."""
    import json

    from models.artifact import ArtifactError
    from models.history import HistoryError
    from models.training import TrainingError
    from models.training import evaluate as run_evaluate

    for label, path in (("MODEL_DIR", model_dir), ("EVENTS", events), ("--labels", labels)):
        if not path.exists():
            usage_error(f"{label} {path}: no such file or directory")
    with _fraud_progress("features", quiet) as progress:
        task = progress.add_task("features", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            partitions = load_settings().scope_partitions()
            result = run_evaluate(model_dir, events, labels, progress=tick, partitions=partitions)
        except (ArtifactError, HistoryError) as exc:
            usage_error(str(exc))
        except TrainingError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(EXIT_FAILED) from None
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k != "precision_at_100_per_day"}
    print(json.dumps(summary, indent=2))


# ---- end fraud ----------------------------------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
