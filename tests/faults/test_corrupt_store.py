"""A label store damaged on disk: verify finds exactly the damaged image with its reason, --repair and a resumed
run write it again, and every reader names a corrupt image in one line instead of a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from autolabel.codecs import ContextCodec
from autolabel.labels import IGNORE
from autolabel.layout import stem_parts
from autolabel.store import LABELS, CorruptImageError, Fault, LabelStore, Provenance, array_path, chunk_key
from autolabel.synth import SynthConfig, generate
from autolabel.verify import verify
from cli import app
from pipelines.ingest import import_labels
from pipelines.label import label
from tests.runs import label_config

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("corrupt")
    generate(base / "root", base / "truth", SynthConfig(train=2, val=1, train_extra=3, height=64, width=128))
    return base / "root"


@pytest.fixture(scope="module")
def pristine(root, tmp_path_factory) -> str:
    """train_extra's gtCoarse imported into a store of the default codec, manifest written: three intact maps."""
    return import_labels(root, "train_extra", "gtCoarse", str(tmp_path_factory.mktemp("pristine") / "s.zarr")).store


@pytest.fixture
def store_url(pristine, tmp_path) -> str:
    """A copy of the pristine store, for a test to damage."""
    shutil.copytree(pristine, tmp_path / "s.zarr")
    return str(tmp_path / "s.zarr")


@pytest.fixture(scope="module")
def victim(pristine) -> str:
    """The image whose chunk a test damages: the second of three."""
    return sorted(LabelStore.open(pristine).completed_ids())[1]


def chunk_file(url: str, image_id: str, group: str = LABELS) -> Path:
    record = LabelStore.open(url).record(image_id)
    city, seq, frame = stem_parts(image_id)
    return Path(url) / array_path(group, city, record.height, record.width) / chunk_key(seq, frame)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE: dict[str, tuple[Callable[[Path], None], Fault]] = {
    "flipped": (flip_a_byte, Fault.CHECKSUM),
    "truncated": (truncate, Fault.CHECKSUM),
    "deleted": (Path.unlink, Fault.MISSING),
}


def damage(url: str, image_id: str, how: str = "flipped") -> None:
    DAMAGE[how][0](chunk_file(url, image_id))


def strip_checksums(url: str) -> None:
    """Make the store's manifest as an autolabel that kept no checksums wrote it."""
    path = Path(url) / "manifest.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["labels_crc32", "confidence_crc32"]), path)


def one_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return " ".join(result.output.split())


# -- verify -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", DAMAGE)
def test_verify_finds_exactly_the_damaged_image_with_its_reason(store_url, victim, how):
    damage(store_url, victim, how)
    report = verify(store_url)
    assert [(c.image_id, c.group, c.fault) for c in report.corrupt] == [(victim, LABELS, DAMAGE[how][1])]
    assert len(report.ok) == 2 and victim not in report.ok and report.decoded == ()


def test_verify_of_an_intact_store_finds_every_image_ok_and_exits_0(store_url):
    result = invoke("verify", store_url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["images"], report["ok"], report["corrupt"]) == (3, 3, [])


def test_a_map_that_is_all_ignore_has_no_chunk_and_is_ok(tmp_path):
    store = LabelStore.create(tmp_path / "s.zarr", Provenance("0" * 64, (1.0,), 0.5, pointrend=False))
    store.write("ulm_000000_000019", np.full((8, 16), IGNORE, np.uint8), source="a.png")
    assert not chunk_file(store.url, "ulm_000000_000019").exists()  # zarr stores no chunk of fill values
    assert verify(store.url).ok == ("ulm_000000_000019",)
    assert (store.read("ulm_000000_000019") == IGNORE).all()


def test_verify_exits_1_and_names_the_corrupt_image_and_its_reason(store_url, victim):
    damage(store_url, victim, "deleted")
    result = invoke("verify", store_url)
    assert result.exit_code == 1, result.output
    assert f"corrupt {victim}: labels chunk missing" in result.output
    assert "--repair" in result.output and "Traceback" not in result.output


def test_verify_json_lists_the_corrupt_image_with_its_fault(store_url, victim):
    damage(store_url, victim, "flipped")
    result = invoke("verify", store_url, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [(c["image_id"], c["map"], c["fault"]) for c in report["corrupt"]] == [(victim, "labels", "checksum")]
    assert report["ok"] == 2 and report["repaired"] is False


# -- repair and resume --------------------------------------------------------------------------------------------


def test_repair_records_the_corrupt_image_as_failed_and_exits_0(store_url, victim):
    damage(store_url, victim, "truncated")
    result = invoke("verify", store_url, "--repair")
    assert result.exit_code == 0, result.output
    store = LabelStore.open(store_url)
    assert store.failed_ids() == {victim} and len(store.completed_ids()) == 2
    assert "verify --repair" in store.manifest().to_pylist()[1]["error"]
    assert invoke("verify", store_url).exit_code == 0


def test_import_after_repair_writes_the_image_again(root, pristine, store_url, victim):
    damage(store_url, victim, "flipped")
    invoke("verify", store_url, "--repair")
    summary = import_labels(root, "train_extra", "gtCoarse", store_url)
    assert (summary.written, summary.skipped) == (1, 2)
    np.testing.assert_array_equal(LabelStore.open(store_url).read(victim), LabelStore.open(pristine).read(victim))


def test_import_resume_writes_a_damaged_image_again_without_repair(root, pristine, store_url, victim):
    damage(store_url, victim, "deleted")
    assert import_labels(root, "train_extra", "gtCoarse", store_url).written == 1
    assert verify(store_url).corrupt == ()


@pytest.fixture
def labelled_copy(labelled_store, tmp_path) -> str:
    """A copy of the session's labelled store (keep_confidence, threshold 0), for a test to damage."""
    shutil.copytree(labelled_store, tmp_path / "labels.zarr")
    return str(tmp_path / "labels.zarr")


def relabel(dataset_root, teacher_checkpoint, url: str):
    """The same labelling command as the one that made the labelled store: a resume."""
    return label(label_config(dataset_root, teacher_checkpoint, url, threshold=0.0, keep_confidence=True))


def test_label_resume_relabels_an_image_whose_chunk_was_damaged(labelled_store, labelled_copy, dataset_root,
                                                                teacher_checkpoint):
    image_id = sorted(LabelStore.open(labelled_copy).completed_ids())[2]
    damage(labelled_copy, image_id, "flipped")
    summary = relabel(dataset_root, teacher_checkpoint, labelled_copy)
    assert (summary.done, summary.skipped, summary.failed) == (1, 5, {})
    store, reference = LabelStore.open(labelled_copy), LabelStore.open(labelled_store)
    np.testing.assert_array_equal(store.read(image_id), reference.read(image_id))
    assert verify(labelled_copy).corrupt == ()


def test_label_resume_after_repair_restores_a_damaged_confidence_map(labelled_store, labelled_copy, dataset_root,
                                                                    teacher_checkpoint):
    image_id = sorted(LabelStore.open(labelled_copy).completed_ids())[0]
    chunk_file(labelled_copy, image_id, "confidence").unlink()
    assert [c.reason for c in verify(labelled_copy, repair_corrupt=True).corrupt] == ["confidence chunk missing"]
    summary = relabel(dataset_root, teacher_checkpoint, labelled_copy)
    assert (summary.done, summary.skipped) == (1, 5)
    store, reference = LabelStore.open(labelled_copy), LabelStore.open(labelled_store)
    np.testing.assert_array_equal(store.read_confidence(image_id), reference.read_confidence(image_id))


# -- readers ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", DAMAGE)
def test_reading_a_damaged_map_is_a_store_error_naming_the_image_and_the_fix(store_url, victim, how):
    damage(store_url, victim, how)
    with pytest.raises(CorruptImageError, match=f"image {victim} is corrupt .*autolabel verify .* --repair"):
        LabelStore.open(store_url).read(victim)


READERS = {
    "inspect": ("inspect", "STORE"),
    "inspect --overlay": ("inspect", "STORE", "--overlay", "VICTIM", "--png", "TMP/o.png"),
    "export": ("export", "STORE", "--out", "TMP/png"),
    "fuse": ("fuse", "ROOT", "--labels", "STORE", "--out", "TMP/f.parquet"),
}


@pytest.mark.parametrize("command", READERS)
def test_a_reader_names_the_corrupt_image_in_one_line(root, store_url, victim, tmp_path, command):
    damage(store_url, victim, "flipped")
    paths = {"STORE": store_url, "VICTIM": victim, "ROOT": str(root), "TMP": str(tmp_path)}
    args = [paths.get(a, a.replace("TMP", str(tmp_path))) for a in READERS[command]]
    line = one_line(invoke(*args))
    assert f"image {victim} is corrupt (labels checksum mismatch" in line
    assert f"autolabel verify {store_url} --repair" in line


# -- stores written before checksums ------------------------------------------------------------------------------


def test_a_store_without_checksums_still_reads_and_verifies_by_decoding(store_url, pristine, victim):
    strip_checksums(store_url)
    store = LabelStore.open(store_url)
    np.testing.assert_array_equal(store.read(victim), LabelStore.open(pristine).read(victim))
    report = verify(store_url)
    assert (len(report.decoded), report.ok, report.corrupt) == (3, (), ())


def test_without_checksums_a_chunk_that_does_not_decode_is_found(store_url, victim):
    strip_checksums(store_url)
    damage(store_url, victim, "truncated")
    assert [(c.image_id, c.fault) for c in verify(store_url).corrupt] == [(victim, Fault.UNDECODABLE)]


def test_without_checksums_a_chunk_of_another_size_is_a_wrong_shape(store_url, victim):
    strip_checksums(store_url)
    chunk_file(store_url, victim).write_bytes(ContextCodec()._encode_plane(np.zeros((96, 128), np.uint8)))
    assert [(c.image_id, c.fault) for c in verify(store_url).corrupt] == [(victim, Fault.SHAPE)]


def test_without_checksums_a_chunk_holding_another_map_is_found_by_its_class_counts(store_url, victim):
    strip_checksums(store_url)
    chunk_file(store_url, victim).write_bytes(ContextCodec()._encode_plane(np.zeros((64, 128), np.uint8)))
    assert [(c.image_id, c.fault) for c in verify(store_url).corrupt] == [(victim, Fault.COUNTS)]


def test_without_checksums_a_deleted_chunk_of_a_labelled_map_is_missing(store_url, victim):
    strip_checksums(store_url)
    damage(store_url, victim, "deleted")
    assert [(c.image_id, c.fault) for c in verify(store_url).corrupt] == [(victim, Fault.MISSING)]
