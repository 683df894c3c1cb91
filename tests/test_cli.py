"""The command line as users drive it: exit codes, JSON output, files written."""

import json

import pytest
from typer.testing import CliRunner

from autolabel.store import LabelStore
from cli import app
from tests.conftest import EXTRA_STEMS

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "data"
    result = invoke("synth", root, "--train", 2, "--val", 1, "--train-extra", 2, "--height", 64, "--width", 128)
    assert result.exit_code == 0, result.output
    return root


def test_synth_writes_the_hidden_truth_next_to_the_root(synth_root):
    truth = synth_root.parent / "data_truth"
    assert sorted(p.name for p in (truth / "gtFine").iterdir()) == ["train_extra"]


def test_synth_refuses_an_existing_root_with_exit_1(synth_root):
    result = invoke("synth", synth_root, "--train", 1, "--val", 1, "--train-extra", 1)
    assert result.exit_code == 1
    assert str(synth_root) in result.output


def test_describe_json_counts_images_per_split(synth_root):
    result = invoke("describe", synth_root, "--json")
    assert result.exit_code == 0, result.output
    splits = json.loads(result.stdout)["splits"]
    assert {name: s["images"] for name, s in splits.items()} == {"train": 2, "val": 1, "train_extra": 2}
    assert sorted(splits["train_extra"]["label_kinds"]) == ["gtCoarse"]


def test_describe_missing_root_exits_1_naming_it(tmp_path):
    result = invoke("describe", tmp_path / "absent")
    assert result.exit_code == 1
    assert "absent" in result.output


def test_unknown_option_is_bad_usage_exit_2(synth_root):
    assert invoke("describe", synth_root, "--bogus").exit_code == 2


def test_import_then_inspect_json_reports_the_store(synth_root, tmp_path):
    store = tmp_path / "coarse.zarr"
    result = invoke("import", synth_root, "--split", "train_extra", "--source", "gtCoarse", "--out", store)
    assert result.exit_code == 0, result.output
    report = json.loads(invoke("inspect", store, "--json").stdout)
    assert report["images"] == 2 and report["failed"] == 0
    assert 0 < report["labelled_fraction"] < 0.8
    for key in ("bytes_per_image", "bits_per_pixel", "vs_uint8", "vs_png", "vs_soft_fp16", "vs_soft_fp32"):
        assert report[key] > 0


def test_import_codec_zstd_is_named_by_inspect_with_its_readers(synth_root, tmp_path):
    store = tmp_path / "coarse.zarr"
    result = invoke("import", synth_root, "--split", "train_extra", "--codec", "zstd", "--out", store)
    assert result.exit_code == 0, result.output
    report = json.loads(invoke("inspect", store, "--json").stdout)
    assert report["codec"] == "zstd" and "tensorstore" in report["reader"]


def test_import_rejects_an_unknown_codec_with_exit_2(synth_root, tmp_path):
    assert invoke("import", synth_root, "--codec", "gif", "--out", tmp_path / "s.zarr").exit_code == 2


def test_import_rejects_an_unknown_source_with_exit_2(synth_root, tmp_path):
    assert invoke("import", synth_root, "--source", "gtMedium", "--out", tmp_path / "s.zarr").exit_code == 2


def test_inspect_overlay_writes_a_png(synth_root, tmp_path):
    store = tmp_path / "fine.zarr"
    assert invoke("import", synth_root, "--split", "train", "--source", "gtFine", "--out", store).exit_code == 0
    image_id = sorted(LabelStore.open(store).completed_ids())[0]
    png = tmp_path / "overlay.png"
    result = invoke("inspect", store, "--overlay", image_id, "--png", png)
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 0


def test_train_then_evaluate_json_gives_fractions(synth_root, tmp_path):
    run = tmp_path / "run"
    result = invoke("train", synth_root, "--out", run, "--iters", 2, "--batch-size", 2, "--crop", "64x128")
    assert result.exit_code == 0, result.output
    assert (run / "model.pt").is_file()
    result = invoke("evaluate", synth_root, "--checkpoint", run / "model.pt", "--json", "--scales", "0.5,1.0")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert 0.0 <= metrics["miou"] <= 1.0 and 0.0 <= metrics["pixel_accuracy"] <= 1.0
    assert set(metrics) >= {"miou", "iou", "boundary_iou", "pixel_accuracy"}


def test_train_rejects_a_malformed_crop_with_exit_2(synth_root, tmp_path):
    assert invoke("train", synth_root, "--out", tmp_path / "r", "--crop", "64by128").exit_code == 2


def test_evaluate_missing_checkpoint_exits_1(synth_root, tmp_path):
    result = invoke("evaluate", synth_root, "--checkpoint", tmp_path / "none.pt")
    assert result.exit_code == 1
    assert "none.pt" in result.output


def test_evaluate_with_a_file_that_is_not_a_checkpoint_exits_1_naming_it(synth_root, tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    result = invoke("evaluate", synth_root, "--checkpoint", tmp_path / "garbage.pt")
    assert result.exit_code == 1
    assert "garbage.pt: not a readable autolabel checkpoint" in result.output



# Labelling on the session's local Ray, with the untrained tiny teacher of conftest.


def test_label_json_summary_counts_every_image_labelled(ray_address, dataset_root, teacher_checkpoint, tmp_path):
    result = invoke("label", dataset_root, "--checkpoint", teacher_checkpoint, "--out", tmp_path / "labels.zarr",
                    "--scales", "1.0", "--workers", 2, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["total"], summary["done"], summary["failed"]) == (len(EXTRA_STEMS), len(EXTRA_STEMS), {})


def test_label_exits_1_naming_the_images_that_failed(ray_address, broken_root, teacher_checkpoint, tmp_path):
    result = invoke("label", broken_root, "--checkpoint", teacher_checkpoint, "--out", tmp_path / "labels.zarr",
                    "--scales", "1.0")
    assert result.exit_code == 1
    assert "zurich_000000_000019" in result.output and "zurich_000001_000019" in result.output
    assert "2 images failed" in result.output


def test_label_into_a_store_of_other_settings_exits_1(labelled_store, dataset_root, teacher_checkpoint):
    result = invoke("label", dataset_root, "--checkpoint", teacher_checkpoint, "--out", labelled_store,
                    "--scales", "1.0", "--threshold", 0.5, "--keep-confidence")
    assert result.exit_code == 1
    assert "made with other settings" in result.output


def test_label_threshold_of_one_is_bad_usage_exit_2(dataset_root, teacher_checkpoint, tmp_path):
    result = invoke("label", dataset_root, "--checkpoint", teacher_checkpoint, "--out", tmp_path / "labels.zarr",
                    "--threshold", 1.0)
    assert result.exit_code == 2
    assert not (tmp_path / "labels.zarr").exists()


def test_rethreshold_json_summary_counts_every_image(labelled_store, tmp_path):
    result = invoke("rethreshold", labelled_store, "--threshold", 0.9, "--out", tmp_path / "high.zarr", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"]) == (len(EXTRA_STEMS), {})


def test_rethreshold_of_a_store_without_confidence_exits_1(synth_root, tmp_path):
    store = tmp_path / "coarse.zarr"
    assert invoke("import", synth_root, "--split", "train_extra", "--out", store).exit_code == 0
    result = invoke("rethreshold", store, "--threshold", 0.9, "--out", tmp_path / "high.zarr")
    assert result.exit_code == 1
    assert "keep_confidence" in result.output


def test_export_writes_one_png_per_stored_image(labelled_store, tmp_path):
    result = invoke("export", labelled_store, "--out", tmp_path / "pngs", "--format", "labelIds")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "pngs").rglob("*.png")) == sorted(
        f"{stem}_labelIds.png" for stem in EXTRA_STEMS)


def test_export_unknown_format_is_bad_usage_exit_2(labelled_store, tmp_path):
    result = invoke("export", labelled_store, "--out", tmp_path / "pngs", "--format", "color")
    assert result.exit_code == 2


def test_label_with_a_file_that_is_not_a_checkpoint_exits_1_before_creating_the_store(dataset_root, tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    result = invoke("label", dataset_root, "--checkpoint", tmp_path / "garbage.pt", "--out", tmp_path / "l.zarr")
    assert result.exit_code == 1
    assert "garbage.pt: not a readable autolabel checkpoint" in result.output
    assert not (tmp_path / "l.zarr").exists()


def test_evaluate_max_pixels_below_one_window_is_bad_usage_exit_2(synth_root, tmp_path):
    result = invoke("evaluate", synth_root, "--checkpoint", tmp_path / "model.pt", "--max-pixels", 16)
    assert result.exit_code == 2
    assert "at least 4096" in result.output


def test_calibrate_json_reports_each_threshold_for_the_target(synth_root, teacher_checkpoint):
    result = invoke("calibrate", synth_root, "--checkpoint", teacher_checkpoint, "--scales", "1.0",
                    "--target-accuracy", "0.9", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["thresholds"]) == 10 and report["split"] == "val"
    assert report["target_accuracy"] == 0.9 and "recommended" in report


def test_calibrate_target_accuracy_above_one_is_bad_usage_exit_2(synth_root, teacher_checkpoint):
    assert invoke("calibrate", synth_root, "--checkpoint", teacher_checkpoint, "--target-accuracy", "1.5").exit_code == 2


def test_train_unknown_optimizer_is_bad_usage_exit_2(synth_root, tmp_path):
    assert invoke("train", synth_root, "--out", tmp_path / "run", "--optimizer", "lamb").exit_code == 2


@pytest.mark.parametrize(("choice", "library"), [
    ("Codec", "autolabel.codecs:CODECS"),
    ("Preset", "models.teacher:TEACHER_PRESETS"),
    ("LabelSource", "autolabel.layout:LABEL_SOURCES"),
    ("ExportFormat", "pipelines.export:FORMATS"),
    ("Optimizer", "pipelines.train:OPTIMIZERS"),
])
def test_cli_choices_are_the_library_choices(choice, library):
    """typer's lists (in --help, and what it refuses with exit 2) must offer exactly what the library accepts."""
    import importlib

    import cli

    module, name = library.split(":")
    assert sorted(c.value for c in getattr(cli, choice)) == sorted(getattr(importlib.import_module(module), name))
