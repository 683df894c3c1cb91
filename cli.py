"""autolabel command line: one command per user task. Parses options, prints, calls pipelines."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    help="Turn coarse street-scene images into thresholded teacher labels, stored compactly, and train students on them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()


class Failure(Exception):
    """An expected failure the user can act on: printed as one line, exit code 1."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from autolabel.layout import DatasetError

    errors: list[type[BaseException]] = [Failure, DatasetError, FileNotFoundError, FileExistsError]
    try:
        from autolabel.store import StoreError

        errors.append(StoreError)
    except ImportError:
        pass
    return tuple(errors)


def command(fn):
    """Register `fn` as a command; expected errors print one line and exit 1."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            return fn(*args, **kwargs)
        except _expected_errors() as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None

    return app.command()(run)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def print_json(data: dict) -> None:
    out.print_json(json.dumps(data), highlight=False)


# --------------------------------------------------------------------------- synth
@command
def synth(
    root: Annotated[Path, typer.Argument(help="Dataset root to create (Cityscapes layout).")] = Path("synthscapes"),
    truth: Annotated[
        Optional[Path],
        typer.Option(help="Where the hidden fine labels of train_extra go [default: ROOT_truth next to ROOT]."),
    ] = None,
    train: Annotated[int, typer.Option(help="Fine-labelled training images.")] = 32,
    val: Annotated[int, typer.Option(help="Fine-labelled validation images.")] = 16,
    train_extra: Annotated[int, typer.Option(help="Coarse-only images (the ones to auto-label).")] = 64,
    height: Annotated[int, typer.Option(help="Image height in pixels.")] = 128,
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 256,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same dataset.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset at ROOT.")] = False,
) -> None:
    """Write a synthetic street-scene dataset in the Cityscapes layout.

    Splits train/val (gtFine + gtCoarse) and train_extra (gtCoarse only); the true fine labels of train_extra go to
    a separate TRUTH root that training never reads, so auto-label accuracy can be measured.
    """
    from autolabel.synth import SynthConfig, generate

    truth = truth or root.parent / f"{root.name}_truth"
    config = SynthConfig(train=train, val=val, train_extra=train_extra, height=height, width=width, seed=seed)
    with progress_bar() as bar:
        task = bar.add_task("synth", total=train + val + train_extra)
        generate(root, truth, config, progress=lambda done, total: bar.update(task, completed=done), overwrite=overwrite)
    console.print(f"wrote {train + val + train_extra} images to {root} (hidden train_extra truth: {truth})")


# --------------------------------------------------------------------------- describe
@command
def describe(
    root: Annotated[Path, typer.Argument(help="Cityscapes-format dataset root.")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Summarise a dataset: images per split, label kinds, image sizes, class pixel histogram."""
    from autolabel.describe import describe as describe_root
    from autolabel.labels import CLASS_NAMES

    report = describe_root(root)
    if json_:
        print_json(report)
        return
    splits = Table(title=f"{root}")
    for col in ("split", "images", "cities", "image sizes", "label kinds (labelled fraction)"):
        splits.add_column(col)
    for name, split in report["splits"].items():
        kinds = ", ".join(f"{k} ({v['labelled_fraction']:.0%})" for k, v in split["label_kinds"].items()) or "-"
        sizes = ", ".join(f"{k} ({v})" for k, v in split["image_sizes"].items())
        splits.add_row(name, str(split["images"]), str(split["cities"]), sizes, kinds)
    out.print(splits)
    hist = Table(title="class pixels")
    hist.add_column("class")
    columns = [(s, k) for s, split in report["splits"].items() for k in split["label_kinds"]]
    for split_name, kind in columns:
        hist.add_column(f"{split_name}/{kind}", justify="right")
    for name in CLASS_NAMES:
        hist.add_row(name, *(f"{report['splits'][s]['label_kinds'][k]['class_pixels'][name]:,}" for s, k in columns))
    out.print(hist)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
