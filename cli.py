"""autolabel command line: one command per user task. Parses options, prints, calls pipelines."""

from __future__ import annotations

import _thread
import dataclasses
import enum
import functools
import json
import logging
import math
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autolabel.errors import AutolabelError

app = typer.Typer(
    help="Turn coarse street-scene images into thresholded teacher labels, stored compactly, and train students on them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
console = Console(stderr=True)
stdout = Console()


def command(fn=None, *, name: str | None = None):
    """Register `fn` as a command; expected errors print one line and exit 1, Ctrl-C one line and exit 130."""
    if fn is None:
        return functools.partial(command, name=name)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        previous_hook, sys.unraisablehook = sys.unraisablehook, redeliver_swallowed_interrupt
        try:
            return fn(*args, **kwargs)
        except AutolabelError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("interrupted: what was finished is kept; run the same command again to resume",
                          highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        finally:
            sys.unraisablehook = previous_hook

    return app.command(name)(run)


REDELIVER_INTERRUPT_S = 0.05


def redeliver_swallowed_interrupt(unraisable: Any) -> None:
    """sys.unraisablehook of a command: a Ctrl-C that Python cannot raise where it lands (in an at-fork hook, as
    while Ray starts its processes, or in a finaliser) would be printed and lost, and the command would run on;
    it is raised again in the main thread instead, from a timer so that it lands after the hook (one that lands
    in a hook again comes back here). Anything else is reported as Python reports it."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        timer = threading.Timer(REDELIVER_INTERRUPT_S, _thread.interrupt_main)
        timer.daemon = True
        timer.start()
    else:
        sys.__unraisablehook__(unraisable)


def progress_bar(transient: bool = True) -> Progress:
    """A progress bar on stderr; transient ones vanish when the command ends (its summary line stays), so a
    command that fails leaves only its one-line error."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def print_json(data: dict) -> None:
    stdout.print_json(json.dumps(data), highlight=False)


# --------------------------------------------------------------------------- choices
# typer lists these in --help and refuses anything else with exit 2; tests/test_cli.py checks that each matches
# the library's own list.
def _choices(name: str, *values: str) -> type[enum.Enum]:
    return enum.Enum(name, {value: value for value in values}, type=str)


Preset = _choices("Preset", "tiny", "w18s", "w48")
Device = _choices("Device", "cpu", "cuda")
Codec = _choices("Codec", "context", "webp", "zstd", "jpegxl")
LabelSource = _choices("LabelSource", "gtCoarse", "gtFine")
ExportFormat = _choices("ExportFormat", "trainIds", "labelIds")
Optimizer = _choices("Optimizer", "adamw", "sgd")


def _value(choice: enum.Enum | None) -> str | None:
    return None if choice is None else choice.value


# --------------------------------------------------------------------------- values typer cannot range-check
def _threshold(value: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise typer.BadParameter(f"must be in [0, 1), got {value}")
    return value


def _target_accuracy(value: float) -> float:
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise typer.BadParameter(f"must be in (0, 1], got {value}")
    return value


def _scales(text: str | None) -> str | None:
    """Checks --scales (comma-separated positive numbers); `parse_scales` turns it into a tuple."""
    if text is not None:
        try:
            scales = parse_scales(text)
        except ValueError:
            raise typer.BadParameter(f"expected comma-separated numbers like 0.5,1.0,2.0, got {text!r}") from None
        if not all(math.isfinite(s) and s > 0 for s in scales):
            raise typer.BadParameter(f"scales must be positive numbers, got {text!r}")
    return text


def parse_scales(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _hw(text: str) -> str:
    try:
        parse_hw(text)
    except ValueError:
        raise typer.BadParameter(f"expected HxW like 64x128, got {text!r}") from None
    return text


def _storage_options(text: str | None) -> str | None:
    """Checks --storage-options (a JSON object); `parse_storage_options` turns it into a dict."""
    if text is not None and not isinstance(_json_or_none(text), dict):
        raise typer.BadParameter(f"expected a JSON object like '{{\"endpoint_url\": \"http://127.0.0.1:9000\"}}', "
                                 f"got {text!r}")
    return text


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse_storage_options(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)


def parse_hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def _max_pixels(value: int | None) -> int | None:
    """Refuses (exit 2) a --max-pixels below the smallest sliding window."""
    from models.predict import MIN_WINDOW

    if value is not None and value < MIN_WINDOW**2:
        raise typer.BadParameter(f"must be at least {MIN_WINDOW**2} (one {MIN_WINDOW}x{MIN_WINDOW} window), got {value}")
    return value


def predict_options(scales: str | None, pointrend: bool, flip: bool, max_pixels: int | None, batch_size: int = 1):
    """The library's PredictOptions from the options given; what is not given keeps the library's default."""
    from models.predict import PredictOptions

    given = {"max_pixels": max_pixels} if max_pixels is not None else {}
    if scales is not None:
        given["scales"] = parse_scales(scales)
    return PredictOptions(pointrend=pointrend, flip=flip, batch_size=batch_size, **given)


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
    stdout.print(splits)
    hist = Table(title="class pixels")
    hist.add_column("class")
    columns = [(s, k) for s, split in report["splits"].items() for k in split["label_kinds"]]
    for split_name, kind in columns:
        hist.add_column(f"{split_name}/{kind}", justify="right")
    for name in CLASS_NAMES:
        hist.add_row(name, *(f"{report['splits'][s]['label_kinds'][k]['class_pixels'][name]:,}" for s, k in columns))
    stdout.print(hist)


# --------------------------------------------------------------------------- import
OverwriteOption = Annotated[bool, typer.Option(
    help="Replace a store at --out that was made with other settings (source, teacher, scales, threshold, codec). "
         "A store made with the same settings is resumed, never wiped: finished images are kept.")]
StorageOptionsOption = Annotated[Optional[str], typer.Option(
    callback=_storage_options, show_default=False,
    help="fsspec options of the store URL, as a JSON object: for an S3-compatible server e.g. "
         "'{\"endpoint_url\": \"http://127.0.0.1:9000\", \"key\": \"...\", \"secret\": \"...\"}'. "
         "Without it, S3 takes the AWS environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).")]
CODEC_HELP = ("How the maps of a new store are compressed: context (default; each pixel predicted from its "
              "neighbours and arithmetic-coded, 0.2-0.3x the bytes of PNG), webp (WebP lossless, about 1.7x the bytes "
              "of context), zstd (zarr v3 specification codecs only: any zarr v3 reader, e.g. tensorstore, opens the "
              "store; about 2.5x the bytes of context) or jpegxl (about 10x slower to write and read than webp, no "
              "smaller). Default: context, or the codec of the store being resumed.")


@command(name="import")
def import_(
    root: Annotated[Path, typer.Argument(help="Cityscapes-format dataset root.")],
    out: Annotated[str, typer.Option("--out", help="Label store to write (path or fsspec URL, e.g. labels.zarr).")],
    split: Annotated[str, typer.Option(help="Split whose label maps to import.")] = "train",
    source: Annotated[LabelSource, typer.Option(help="Label kind.")] = "gtCoarse",
    overwrite: OverwriteOption = False,
    codec: Annotated[Optional[Codec], typer.Option(help=CODEC_HELP, show_default=False)] = None,
    storage_options: StorageOptionsOption = None,
) -> None:
    """Import existing PNG label maps (label ids) into a label store, as train ids.

    Converts a PNG label set into the compact zarr store; rerunning skips images already stored.
    """
    _import(root, out, split, source.value, overwrite, _value(codec), parse_storage_options(storage_options))


def _import(root: Path, out: str, split: str, source: str, overwrite: bool, codec: str | None,
            options: dict | None) -> None:
    from pipelines.ingest import import_labels

    with progress_bar() as bar:
        task = bar.add_task(f"import {split}/{source}", total=None)
        summary = import_labels(root, split, source, out, overwrite,
                                progress=lambda done, total: bar.update(task, completed=done, total=total),
                                codec=codec, storage_options=options)
    console.print(f"{summary.store}: {summary.written} written, {summary.skipped} already stored, "
                  f"{len(summary.failed)} failed")
    for image_id, error in summary.failed.items():
        console.print(f"  failed {image_id}: {error}", highlight=False)
    if summary.failed:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- inspect
def human_bytes(n: float) -> str:
    """Decimal units: 950 B, 1.5 kB, 600.0 MB, 2.1 TB."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    step = 0
    while abs(n) >= 1000 and step < len(units) - 1:
        n /= 1000
        step += 1
    return f"{n:.0f} B" if step == 0 else f"{n:.1f} {units[step]}"


def _smaller(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:,.1f}x smaller"


def storage_table(report: dict[str, Any]) -> Table:
    """The report as a rich Table: sizes, savings, extrapolation, class shares."""
    table = Table(title=f"Label store {report['store']}", show_header=True)
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    level = "" if report["codec_level"] is None else f" (level {report['codec_level']})"
    table.add_row("codec", f"{report['codec']}{level}")
    table.add_row("readable by", report["reader"])
    table.add_row("images (failed)", f"{report['images']:,} ({report['failed']:,})")
    table.add_row("on disk, per image", human_bytes(report["bytes_per_image"]))
    table.add_row("on disk, all", human_bytes(report["bytes_on_disk"]))
    table.add_row("  label maps", human_bytes(report["label_bytes"]))
    if report["confidence_bytes"]:
        table.add_row("  confidence maps", human_bytes(report["confidence_bytes"]))
    table.add_row("  metadata and manifest", human_bytes(report["metadata_bytes"]))
    table.add_row("bits per pixel", f"{report['bits_per_pixel']:.4f}")
    table.add_row("labelled pixels", f"{report['labelled_fraction']:.1%}")
    table.add_section()
    table.add_row("vs raw uint8", _smaller(report["vs_uint8"]))
    table.add_row(f"vs PNG ({report['png_sample_images']} measured)", _smaller(report["vs_png"]))
    table.add_row("vs soft fp16", _smaller(report["vs_soft_fp16"]))
    table.add_row("vs soft fp32", _smaller(report["vs_soft_fp32"]))
    table.add_section()
    big = report["extrapolation"]
    scope = f"{big['images']:,} x {big['width']}x{big['height']}"
    table.add_row(f"{scope}: this store", human_bytes(big["store_bytes"]))
    table.add_row(f"{scope}: raw uint8", human_bytes(big["uint8_bytes"]))
    table.add_row(f"{scope}: soft fp16", human_bytes(big["soft_fp16_bytes"]))
    table.add_row(f"{scope}: soft fp32", human_bytes(big["soft_fp32_bytes"]))
    table.add_section()
    pixels = report["pixels"]
    for name, count in report["class_pixels"].items():
        table.add_row(f"class {name}", f"{count / pixels:.2%}")
    return table


@command
def inspect(
    store: Annotated[str, typer.Argument(help="Label store (path or fsspec URL).")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    overlay: Annotated[Optional[str], typer.Option(help="Image id to render with its labels (needs --png).")] = None,
    png: Annotated[Optional[Path], typer.Option(help="Where to write the --overlay rendering.")] = None,
    storage_options: StorageOptionsOption = None,
) -> None:
    """Report a label store: its codec and what reads it, images, failures, bytes on disk (every file: maps,
    metadata, manifest) per image, bits/pixel, labelled fraction, class pixels, and savings against raw uint8, PNG
    and soft (19-class fp16/fp32) labels, extrapolated to 19,998 images of 1024x2048. Reads the store's manifest,
    not its maps (except a sample re-encoded as PNG)."""
    _inspect(store, json_, overlay, png, parse_storage_options(storage_options))


def _inspect(store_url: str, json_: bool, overlay: str | None, png: Path | None, options: dict | None) -> None:
    from autolabel.storage_report import storage_report
    from autolabel.store import LabelStore

    if (overlay is None) != (png is None):
        raise typer.BadParameter("--overlay and --png go together", param_hint="--overlay/--png")
    store = LabelStore.open(store_url, storage_options=options)
    if overlay is not None:
        from autolabel.images import read_image, write_png
        from autolabel.overlay import render_overlay

        labels = store.read(overlay)
        write_png(png, render_overlay(read_image(Path(store.record(overlay).source)), labels))
        console.print(f"wrote {png}")
        return
    report = storage_report(store)
    if json_:
        print_json(report)
    else:
        stdout.print(storage_table(report))


# --------------------------------------------------------------------------- verify
@command
def verify(
    store: Annotated[str, typer.Argument(help="Label store (path or fsspec URL).")],
    repair: Annotated[bool, typer.Option(
        help="Record each corrupt image as failed (its chunks deleted), so that rerunning the `label` (or `import`) "
             "command that made STORE writes it again. Run it while nothing else writes to STORE.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    storage_options: StorageOptionsOption = None,
) -> None:
    """Check every stored map of a label store against its record, and name the corrupt images.

    Each image's chunks are read (not decoded) and their CRC-32 compared with the one recorded when they were
    written: a chunk deleted, truncated or altered on disk is found, with its reason (chunk missing, checksum
    mismatch). Images recorded by an autolabel that kept no checksums are decoded instead, and must have their
    recorded size and class counts (reasons: does not decode, wrong shape, class counts differ).

    Exits 1 when corrupt images are found and not repaired; 0 when none are, or --repair marked them. A corrupt
    image also makes `inspect`, `export`, `fuse` and training stop with an error naming it; `label` on the same
    store writes corrupt images again by itself.
    """
    _verify(store, repair, json_, parse_storage_options(storage_options))


def _verify(store_url: str, repair: bool, json_: bool, options: dict | None) -> None:
    from autolabel.verify import verify as run_verify

    with progress_bar() as bar:
        task = bar.add_task("verify", total=None)
        report = run_verify(store_url, repair, progress=lambda done, total: bar.update(task, completed=done,
                                                                                      total=total), storage_options=options)
    if json_:
        print_json(report.to_dict())
    else:
        for corruption in report.corrupt:
            console.print(f"  corrupt {corruption.image_id}: {corruption.reason}", highlight=False, soft_wrap=True)
        decoded = f", {len(report.decoded)} decoded (recorded without checksums)" if report.decoded else ""
        repaired = ("; recorded as failed: rerun the label (or import) command that made the store to write them "
                    "again") if report.repaired else ""
        console.print(f"{report.store}: {len(report.ok)} ok{decoded}, {len(report.corrupt)} corrupt{repaired}",
                      highlight=False, soft_wrap=True)
    if report.corrupt and not report.repaired:
        if not json_:
            console.print(f"[red]{len(report.corrupt)} corrupt images[/red]; `autolabel verify {report.store} "
                          "--repair` marks them to be labelled again", soft_wrap=True)
        raise typer.Exit(1)


# --------------------------------------------------------------------------- train
DeviceOption = Annotated[Device, typer.Option(help="Where the network runs.")]


@command
def train(
    root: Annotated[Path, typer.Argument(help="Cityscapes-format dataset root (fine labels of --split are used).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory: model.pt, checkpoints/, metrics.jsonl.")],
    preset: Annotated[Preset, typer.Option(help="Model size: tiny (CPU tests), w18s, w48 (the paper's teacher).")] = "tiny",
    iters: Annotated[int, typer.Option(help="Training iterations (batches).")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Images per iteration, over all workers.")] = 8,
    crop: Annotated[str, typer.Option(callback=_hw, help="Training crop HxW.")] = "64x128",
    lr: Annotated[float, typer.Option(help="Peak learning rate, reached after the warm-up, then decayed linearly "
                                           "(poly) to 0.")] = 0.003,
    optimizer: Annotated[Optimizer, typer.Option(
        help="adamw (learns fastest from scratch) or sgd (momentum 0.9; pass a larger --lr, e.g. 0.01).")] = "adamw",
    warmup_iters: Annotated[int, typer.Option(min=0, help="Iterations of linear learning-rate warm-up.")] = 25,
    eval_every: Annotated[int, typer.Option(
        min=0, help="Log the val mIoU (scale 1.0) every N iterations to metrics.jsonl: the learning curve. "
                    "0: never.")] = 0,
    workers: Annotated[int, typer.Option(help="Data-parallel workers; more than 1 uses Ray Train.")] = 1,
    device: DeviceOption = "cpu",
    samples: Annotated[Optional[str], typer.Option(
        help="Train on a fused sample table (written by autolabel fuse) instead of --split.")] = None,
    init: Annotated[Optional[Path], typer.Option(
        help="Start from this checkpoint's network and weights (e.g. a student continuing from its teacher) "
             "instead of a fresh --preset network.")] = None,
    train_only: Annotated[Optional[str], typer.Option(
        help="With --init: fit only these parts, comma-separated (point_head, attention, ocr, backbone), the rest "
             "frozen with its BatchNorm statistics; e.g. point_head,attention for a converted teacher.")] = None,
    split: Annotated[str, typer.Option(help="Fine-labelled split to train on.")] = "train",
    class_uniform: Annotated[float, typer.Option(help="Fraction of crops centred on class centroids.")] = 0.5,
    class_balance: Annotated[float, typer.Option(
        min=0.0, help="Loss weight of each class (pixels and PointRend points alike): its share of the batch's "
                      "pixels to the power -B, so rare, thin classes count (0.5: a class 100x rarer weighs 10x); "
                      "0: plain cross-entropy.")] = 0.5,
    checkpoint_every: Annotated[int, typer.Option(help="Save a resumable checkpoint every N iterations.")] = 200,
    loader_workers: Annotated[int, typer.Option(help="Data-loading processes per worker (0: in the training process).")] = 0,
    fine_fraction: Annotated[Optional[float], typer.Option(help="With --samples: share of fine samples per epoch.")] = None,
    coarse_rare_only: Annotated[bool, typer.Option(help="With --samples: centre coarse crops on rare classes only.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address for --workers > 1.")] = None,
    storage_options: Annotated[Optional[str], typer.Option(
        callback=_storage_options, show_default=False,
        help="With --samples: fsspec options of the label stores the table names, as a JSON object (see label "
             "--help); never written to a checkpoint.")] = None,
) -> None:
    """Train a teacher (or student) network; rerunning the same command resumes from the last checkpoint."""
    from pipelines.train import TrainConfig

    config = TrainConfig(root=str(root), run_dir=str(out), preset=preset.value, iters=iters, batch_size=batch_size,
                         crop=parse_hw(crop), lr=lr, optimizer=optimizer.value, warmup_iters=warmup_iters,
                         eval_every=eval_every, workers=workers, device=device.value, samples=samples,
                         init=None if init is None else str(init),
                         train_only=None if train_only is None else tuple(train_only.split(",")),
                         split=split, class_uniform=class_uniform, class_balance=class_balance,
                         checkpoint_every=checkpoint_every, seed=seed,
                         loader_workers=loader_workers, fine_fraction=fine_fraction, coarse_rare_only=coarse_rare_only,
                         storage_options=parse_storage_options(storage_options))
    _train(config, address)


def _train(config, address: str | None) -> None:
    from pipelines.train import train as run_training

    with progress_bar() as bar:
        task = bar.add_task("train", total=config.iters)

        def report(step) -> None:
            bar.update(task, completed=step.iteration,
                       description=f"train loss {step.loss:.3f} {step.images_per_s:.1f} img/s")

        final = run_training(config, reporter=report, address=address)
    console.print(f"model: {final}")


# --------------------------------------------------------------------------- convert-checkpoint
class CheckpointSource(str, enum.Enum):
    """Implementations whose published checkpoints `convert-checkpoint` reads."""

    nvidia = "nvidia"
    hrnet_ocr = "hrnet-ocr"
    mmseg = "mmseg"


@command(name="convert-checkpoint")
def convert_checkpoint(
    src: Annotated[Path, typer.Argument(help="Checkpoint file of the named implementation (.pth).")],
    source: Annotated[CheckpointSource, typer.Option(
        "--from", help="nvidia: semantic-segmentation ocrnet.HRNet_Mscale (86.9 val at 0.5/1.0/2.0); hrnet-ocr: "
                       "HRNet-Semantic-Segmentation HRNet-OCR W48 (81.6); mmseg: mmsegmentation OCRNet "
                       "HRNetV2p-W48 (80.7-81.4).")],
    out: Annotated[Path, typer.Option("--out", help="This project's checkpoint to write.")],
    preset: Annotated[Preset, typer.Option(help="Network widths of the source (w48 for the published teachers).")] = "w48",
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Turn a published teacher's checkpoint into one that `evaluate`, `label`, `calibrate` and `train --init` use.

    The file is opened without running any code it may hold. The converted network computes what the source
    computes (its key names, conv biases, upsampling corners and input normalisation are translated). Parts the
    source lacks, the PointRend point head (and the scale attention for hrnet-ocr and mmseg), are listed as
    untrained: fit them with `train --init OUT --train-only point_head,attention`, or label with --no-pointrend
    and --scales 1.0.
    """
    from pipelines.convert import convert

    summary = convert(src, source.value, out, preset.value)
    if json_:
        print_json(dataclasses.asdict(summary))
        return
    console.print(f"converted {summary.source} checkpoint {src}: {summary.consumed} tensors, "
                  f"{summary.folded_biases} conv biases folded into BatchNorm, {len(summary.skipped)} training-only "
                  f"entries skipped; inputs {summary.input['channels']} normalised as the source was trained",
                  highlight=False, soft_wrap=True)
    if summary.untrained:
        console.print(f"[yellow]untrained:[/yellow] {', '.join(summary.untrained)} (fit with train --init "
                      f"{out} --train-only {','.join(summary.untrained)})", highlight=False, soft_wrap=True)
    console.print(f"model: {summary.out} (sha256 {summary.sha256[:12]}); published scales "
                  f"{','.join(map(str, summary.recommended_scales))}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- evaluate
MAX_PIXELS_HELP = ("Largest scaled input (pixels) predicted in one piece; larger ones run in overlapping sliding "
                   "windows. Lower it if the largest scale runs out of memory. [default: 1024x2048]")


MaxPixelsOption = Annotated[Optional[int], typer.Option(callback=_max_pixels, help=MAX_PIXELS_HELP, show_default=False)]
FlipOption = Annotated[bool, typer.Option(
    help="Average each prediction with that of the mirrored image: a slightly stronger teacher at twice the cost.")]


@command
def evaluate(
    root: Annotated[Path, typer.Argument(help="Cityscapes-format dataset root.")],
    checkpoint: Annotated[Path, typer.Option(help="Model checkpoint (model.pt of a run).")],
    split: Annotated[str, typer.Option(help="Fine-labelled split to evaluate on.")] = "val",
    scales: Annotated[Optional[str], typer.Option(
        callback=_scales, help="Inference scales, fused by multi-scale attention. [default: 1.0]",
        show_default=False)] = None,
    pointrend: Annotated[bool, typer.Option(help="Refine with PointRend subdivision.")] = True,
    device: DeviceOption = "cpu",
    save_predictions: Annotated[Optional[Path], typer.Option(help="Write label-id PNGs (Cityscapes results format).")] = None,
    max_pixels: MaxPixelsOption = None,
    flip: FlipOption = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON (fractions 0..1).")] = False,
) -> None:
    """Score a checkpoint: mIoU, per-class IoU, pixel accuracy and Boundary IoU on a fine-labelled split."""
    from pipelines.evaluate import EvaluateConfig
    from pipelines.evaluate import evaluate as run_evaluation

    config = EvaluateConfig(root=root, checkpoint=checkpoint, split=split, device=device.value,
                            predict=predict_options(scales, pointrend, flip, max_pixels),
                            save_predictions=save_predictions)
    with progress_bar() as bar:
        task = bar.add_task(f"evaluate {split}", total=None)
        result = run_evaluation(config, progress=lambda done, total: bar.update(task, completed=done, total=total))
    if json_:
        print_json(result.to_dict())
        return
    table = Table(title=f"{checkpoint} on {split} (scales {','.join(map(str, result.scales))}, "
                        f"PointRend {'on' if pointrend else 'off'})")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("Boundary IoU", justify="right")
    for name, iou in result.iou.items():
        biou = result.boundary_iou_per_class.get(name)
        table.add_row(name, f"{iou:.1%}", "-" if biou is None else f"{biou:.1%}")
    table.add_row("[bold]mean[/bold]", f"[bold]{result.miou:.1%}[/bold]", f"[bold]{result.boundary_iou:.1%}[/bold]")
    stdout.print(table)
    stdout.print(f"pixel accuracy {result.pixel_accuracy:.1%} over {result.images} images")


# --------------------------------------------------------------------------- calibrate
@command
def calibrate(
    root: Annotated[Path, typer.Argument(help="Cityscapes-format dataset root with a fine-labelled split.")],
    checkpoint: Annotated[Path, typer.Option(help="Teacher checkpoint (model.pt of a training run).")],
    split: Annotated[str, typer.Option(help="Fine-labelled split to measure on (never the split you label).")] = "val",
    scales: Annotated[Optional[str], typer.Option(
        callback=_scales, help="Inference scales, as `label` will use them. [default: 0.5,1.0,2.0]",
        show_default=False)] = None,
    pointrend: Annotated[bool, typer.Option(help="Refine with PointRend subdivision, as `label` will.")] = True,
    target_accuracy: Annotated[float, typer.Option(
        callback=_target_accuracy,
        help="Recommend the lowest threshold whose kept pixels are at least this accurate.")] = 0.95,
    device: DeviceOption = "cpu",
    max_pixels: MaxPixelsOption = None,
    flip: FlipOption = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON (fractions 0..1).")] = False,
) -> None:
    """Pick a labelling threshold from evidence: coverage and accuracy of the kept pixels at each threshold.

    Runs the teacher over a split with fine labels, with the scales and PointRend setting that `label` will use,
    and reports for each threshold from 0.50 to 0.95 the share of truly labelled pixels it keeps (coverage) and
    the share of those that are right (accuracy). A higher threshold keeps fewer pixels, more of them right. The
    recommended threshold is the lowest one (in steps of 0.01) that reaches --target-accuracy; pass it to
    `label --threshold`.
    """
    from pipelines.calibrate import calibrate as run_calibration
    from pipelines.evaluate import EvaluateConfig
    from pipelines.label import LABEL_SCALES

    options = predict_options(scales or ",".join(map(str, LABEL_SCALES)), pointrend, flip, max_pixels)
    config = EvaluateConfig(root=root, checkpoint=checkpoint, split=split, device=device.value, predict=options)
    with progress_bar() as bar:
        task = bar.add_task(f"calibrate on {split}", total=None)
        result = run_calibration(config, target_accuracy=target_accuracy,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
    if json_:
        print_json(result.to_dict())
        return
    table = Table(title=f"{checkpoint} on {split}: {result.images} images, {result.evaluable_pixels:,} labelled "
                        f"pixels (scales {','.join(map(str, result.scales))}, "
                        f"PointRend {'on' if result.pointrend else 'off'})")
    for col in ("threshold", "coverage", "accuracy"):
        table.add_column(col, justify="right")
    for point in result.points:
        table.add_row(f"{point.threshold:.2f}", f"{point.coverage:.1%}", f"{point.accuracy:.1%}")
    stdout.print(table)
    best = result.recommended
    if best is None:
        stdout.print(f"no threshold up to 0.99 reaches {result.target_accuracy:.1%} accuracy; train the teacher "
                  "longer or lower --target-accuracy")
    else:
        stdout.print(f"recommended: --threshold {best.threshold:.2f} keeps {best.coverage:.1%} of the labelled pixels "
                  f"at {best.accuracy:.1%} accuracy (target {result.target_accuracy:.1%})")


# --------------------------------------------------------------------------- label
def _quiet_ray_data_console() -> None:
    """Keep Ray Data's progress chatter off the console, where our own progress bar is; its log file in the Ray
    session directory still gets everything."""
    import ray.data  # noqa: F401  (configures the ray.data logger)

    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            handler.setLevel(logging.ERROR)


def _label_progress(bar: Progress, description: str):
    """A progress(done, failed, total) callback that shows images done and failed, images/s and ETA."""
    task = bar.add_task(description, total=None, failed=0, rate="")
    start = time.monotonic()

    def progress(done: int, failed: int, total: int) -> None:
        elapsed = time.monotonic() - start
        rate = f"{done / elapsed:.2f} img/s" if elapsed > 0 and done else ""
        bar.update(task, completed=done + failed, total=total, failed=failed, rate=rate)

    return progress


def label_progress_bar(transient: bool = True) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed[/red]"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def _print_label_summary(summary, json_: bool) -> None:
    if json_:
        print_json(summary.to_dict())
    else:
        console.print(
            f"{summary.store}: {summary.done} labelled, {summary.skipped} already stored, "
            + (f"{summary.shared} labelled by another job, " if summary.shared else "")
            + f"{len(summary.failed)} failed of {summary.total}; {summary.images_per_s:.2f} images/s over "
            f"{summary.seconds:.1f} s; labelled fraction {summary.labelled_fraction:.1%}, "
            f"{summary.bytes_per_image:,.0f} bytes/image",
            highlight=False, soft_wrap=True,
        )
    for image_id, error in summary.failed.items():
        console.print(f"  failed {image_id}: {error}", highlight=False, soft_wrap=True)
    if summary.failed:
        console.print(f"[red]{len(summary.failed)} images failed[/red]; rerun the same command to retry them")
        raise typer.Exit(1)


@command
def label(
    root: Annotated[Path, typer.Argument(help="Cityscapes-format dataset root.")],
    checkpoint: Annotated[Path, typer.Option(help="Teacher checkpoint (model.pt of a training run).")],
    out: Annotated[str, typer.Option("--out", help="Label store to write (path or fsspec URL, e.g. labels.zarr).")],
    split: Annotated[str, typer.Option(help="Split whose images are labelled.")] = "train_extra",
    scales: Annotated[Optional[str], typer.Option(
        callback=_scales, help="Inference scales, fused by multi-scale attention. [default: 0.5,1.0,2.0]",
        show_default=False)] = None,
    pointrend: Annotated[bool, typer.Option(help="Refine with PointRend subdivision.")] = True,
    threshold: Annotated[float, typer.Option(callback=_threshold, help="Keep a pixel's class where its max "
                                             "probability exceeds this; other pixels become 255 (ignore).")] = 0.5,
    workers: Annotated[int, typer.Option(min=1, help="Teacher actors (each loads the model once).")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(min=0.0, help="GPUs per actor; 0 runs on the CPU.")] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per inference batch.")] = 1,
    max_pixels: MaxPixelsOption = None,
    address: Annotated[Optional[str], typer.Option(
        help="Ray cluster to run on [default: RAY_ADDRESS, else a local Ray on this machine's cores].")] = None,
    flip: FlipOption = False,
    keep_confidence: Annotated[bool, typer.Option(
        help="Also store whether each labelled pixel's max probability clears 0.5 and 0.9 (the thresholds of the "
             "reference papers), so `rethreshold` can raise the threshold later: those of 0.5 and 0.9 above "
             "--threshold stay exact, others act as the next of them up (a store at 0.5 re-thresholded at 0.7 keeps "
             "what 0.9 keeps). Costs about half the labels' bytes.")] = False,
    overwrite: OverwriteOption = False,
    codec: Annotated[Optional[Codec], typer.Option(help=CODEC_HELP, show_default=False)] = None,
    storage_options: StorageOptionsOption = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Auto-label a split with a teacher on Ray, into a label store.

    Each image is predicted (multi-scale attention, PointRend), hard-thresholded and written whole into the store,
    with its provenance in the store's Parquet manifest. Rerunning the same command resumes: stored images are
    skipped, half-written and failed ones are labelled again. A store made with another checkpoint, scales or
    threshold is refused unless --overwrite. Unreadable images are recorded as failed and never stop the job;
    the command then exits 1.
    """
    from pipelines.label import LABEL_SCALES, LabelConfig
    from pipelines.label import label as run_labeling

    options = predict_options(scales or ",".join(map(str, LABEL_SCALES)), pointrend, flip, max_pixels, batch_size)
    config = LabelConfig(root=root, checkpoint=checkpoint, out=out, split=split, predict=options, threshold=threshold,
                         keep_confidence=keep_confidence, workers=workers, gpus_per_worker=gpus_per_worker,
                         address=address, overwrite=overwrite, codec=_value(codec),
                         storage_options=parse_storage_options(storage_options))
    _quiet_ray_data_console()
    with label_progress_bar() as bar:
        summary = run_labeling(config, progress=_label_progress(bar, f"label {split}"))
    _print_label_summary(summary, json_)


@command
def rethreshold(
    store: Annotated[str, typer.Argument(help="Label store made with --keep-confidence.")],
    threshold: Annotated[float, typer.Option(callback=_threshold, help="The new, higher threshold.")],
    out: Annotated[str, typer.Option("--out", help="New label store to write.")],
    overwrite: OverwriteOption = False,
    codec: Annotated[Optional[Codec], typer.Option(help=CODEC_HELP.replace("context, or the codec of the store being "
                                                                         "resumed", "the codec of STORE"),
                                                 show_default=False)] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    storage_options: Annotated[Optional[str], typer.Option(
        callback=_storage_options, show_default=False,
        help="fsspec options of STORE and --out, as a JSON object (see label --help).")] = None,
) -> None:
    """Threshold a store's labels again at a higher threshold, without running the teacher.

    Needs a store labelled with --keep-confidence; pixels whose stored confidence is not above the new threshold
    become 255 (ignore). Thresholds 0.5 and 0.9 are exact; others act as the next of those up. The
    new store keeps the confidence, so it can be re-thresholded again.
    """
    from pipelines.rethreshold import rethreshold as run_rethreshold

    with label_progress_bar() as bar:
        summary = run_rethreshold(store, out, threshold=threshold, overwrite=overwrite, codec=_value(codec),
                                  progress=_label_progress(bar, f"rethreshold {threshold}"),
                                  storage_options=parse_storage_options(storage_options))
    _print_label_summary(summary, json_)


# --------------------------------------------------------------------------- export
@command
def export(
    store: Annotated[str, typer.Argument(help="Label store (path or fsspec URL).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the PNGs: OUT/{city}/{stem}_{format}.png.")],
    format: Annotated[ExportFormat, typer.Option(
        help="trainIds (0..18, 255 = ignore) or labelIds (Cityscapes ids, ignore as 0 = unlabeled).")] = "trainIds",
    storage_options: StorageOptionsOption = None,
) -> None:
    """Write a label store out as PNG label maps named by Cityscapes stem, for tools that read PNG datasets."""
    from pipelines.export import export as run_export

    with progress_bar() as bar:
        task = bar.add_task(f"export {format.value}", total=None)
        written = run_export(store, out, format.value, progress=lambda done, total: bar.update(task, completed=done,
                                                                                        total=total),
                             storage_options=parse_storage_options(storage_options))
    console.print(f"wrote {written} {format.value} PNGs to {out}")


# --------------------------------------------------------------------------- fuse
@command
def fuse(
    root: Annotated[Path, typer.Argument(help="Cityscapes-format dataset root.")],
    out: Annotated[Path, typer.Option("--out", help="Fused sample table to write (Parquet).")],
    labels: Annotated[Optional[str], typer.Option(help="Label store of auto-labels (autolabel label).")] = None,
    coarse_gt: Annotated[bool, typer.Option(help="Also add the hand-made gtCoarse labels of --coarse-split.")] = False,
    fine_split: Annotated[str, typer.Option(help="Split whose gtFine labels are the fine samples.")] = "train",
    coarse_split: Annotated[str, typer.Option(
        help="The coarse split: --labels should hold its images; --coarse-gt adds its gtCoarse labels.")] = "train_extra",
    storage_options: StorageOptionsOption = None,
) -> None:
    """Write the fused sample table for training: fine labels + auto-labels from a store (+ hand-made coarse labels).

    One row per sample with its label location, per-class pixel counts and class centroids; train a student on it
    with `autolabel train ROOT --samples FUSED.parquet`. Images whose auto-label failed are left out and counted.
    """
    from pipelines.fuse import fuse as run_fuse

    with progress_bar() as bar:
        task = bar.add_task("fuse", total=None)
        summary = run_fuse(root, out, labels, coarse_gt, fine_split, coarse_split,
                           progress=lambda done, total: bar.update(task, completed=done, total=total),
                           storage_options=parse_storage_options(storage_options))
    rows = ", ".join(f"{n} {source}" for source, n in summary.rows.items())
    console.print(f"{summary.samples}: {rows}; {len(summary.failed_auto)} failed auto-labels left out", highlight=False)
    if summary.missing_auto:
        console.print(f"[yellow]warning:[/yellow] {len(summary.missing_auto)} images of {coarse_split} are not in "
                      f"{labels} (e.g. {summary.missing_auto[0]}); finish labelling with autolabel label", soft_wrap=True)


# --------------------------------------------------------------------------- quickstart
class _QuickstartReporter:
    """One progress line per quickstart stage."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task = None

    def stage(self, name: str, reused: bool) -> None:
        self.finish()
        label = f"{name} (reused)" if reused else name
        self.task = self.bar.add_task(label, total=1 if reused else None, completed=1 if reused else 0)

    def progress(self, done: int, total: int | None) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def finish(self) -> None:
        if self.task is not None:
            total = next(t.total for t in self.bar.tasks if t.id == self.task) or 1
            self.bar.update(self.task, completed=total, total=total)


@command
def quickstart(
    workdir: Annotated[Path, typer.Argument(help="Work directory for every stage's files.")] = Path("quickstart"),
    teacher_iters: Annotated[Optional[int], typer.Option(min=1, help="Teacher training iterations.")] = None,
    student_iters: Annotated[Optional[int], typer.Option(min=1, help="Student training iterations.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start again from scratch in WORKDIR.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print results.json instead of the summary table.")] = False,
) -> None:
    """The whole job on the embedded synthetic dataset, in one command.

    synth -> train teacher on fine -> evaluate -> label train_extra with Ray -> inspect storage -> fuse -> train student
    -> evaluate; writes WORKDIR/results.json. Rerunning in the same WORKDIR reuses finished stages.
    """
    import dataclasses
    import shutil

    from pipelines.quickstart import QuickstartConfig
    from pipelines.quickstart import quickstart as run_quickstart

    config = QuickstartConfig()
    overrides = {k: v for k, v in {"teacher_iters": teacher_iters, "student_iters": student_iters}.items()
                 if v is not None}
    config = dataclasses.replace(config, **overrides)
    if overwrite and workdir.exists():
        shutil.rmtree(workdir)
    _quiet_ray_data_console()
    with progress_bar(transient=False) as bar:
        reporter = _QuickstartReporter(bar)
        results = run_quickstart(workdir, config, reporter)
        reporter.finish()
    if json_:
        print_json(results)
        return
    stdout.print(_results_table(results, workdir))


def _results_table(results: dict, workdir: Path) -> Table:
    t, s, a, st = results["teacher"], results["student"], results["auto_labels"], results["storage"]
    table = Table(title=f"autolabel quickstart ({workdir / 'results.json'})")
    table.add_column("stage")
    table.add_column("measured", justify="right")
    table.add_row("teacher (fine only): val mIoU / Boundary IoU", f"{t['miou']:.1%} / {t['boundary_iou']:.1%}")
    table.add_row("auto-labels: labelled fraction / accuracy", f"{a['labelled_fraction']:.1%} / {a['accuracy']:.1%}")
    table.add_row("gtCoarse: labelled fraction / accuracy",
                  f"{a['gt_coarse_labelled_fraction']:.1%} / {a['gt_coarse_accuracy']:.1%}")
    table.add_row("labelling throughput", f"{a['images_per_s']:.2f} images/s")
    table.add_row("storage: bytes/image, bits/pixel", f"{st['bytes_per_image']:,.0f} B, {st['bits_per_pixel']:.3f}")
    table.add_row("savings vs uint8 / PNG / soft fp16",
                  f"{st['vs_uint8']:.0f}x / {st['vs_png']:.2f}x / {st['vs_soft_fp16']:,.0f}x")
    table.add_row("student (fine + auto): val mIoU / Boundary IoU", f"{s['miou']:.1%} / {s['boundary_iou']:.1%}")
    table.add_row("student - teacher: val mIoU", f"{100 * results['student_vs_teacher_miou']:+.1f} points")
    for run, curve in results["learning_curves"].items():
        table.add_row(f"{run} learning curve: val mIoU (scale 1.0) at iteration",
                      ", ".join(f"{it}: {miou:.1%}" for it, miou in curve))
    return table


def main() -> None:
    app()


if __name__ == "__main__":
    main()
