import json
import multiprocessing as mp
from multiprocessing.synchronize import Barrier
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from zarr.storage import LocalStore

from autolabel.errors import DatasetError, StoreError
from autolabel.labels import IGNORE, NUM_CLASSES
from autolabel.store import (
    MANIFEST_SCHEMA,
    ImageNotStoredError,
    ImageRecord,
    LabelStore,
    Provenance,
    ProvenanceMismatchError,
    kept_confidence,
)
from autolabel.threshold import rethreshold

PROVENANCE = Provenance(checkpoint_sha256="ab" * 32, scales=(1.0, 0.5), threshold=0.5, pointrend=True)
H, W = 64, 128


def _labels(seed: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """A piecewise-constant (H, W) map with an ignore band, like a thresholded prediction."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, NUM_CLASSES, size=(shape[0] // 16 + 1, shape[1] // 16 + 1), dtype=np.uint8)
    labels = np.kron(blocks, np.ones((16, 16), dtype=np.uint8))[: shape[0], : shape[1]].copy()
    labels[:, 10:13] = IGNORE
    return labels


def _id(i: int) -> str:
    return f"bremen_000000_{i:06d}"


@pytest.fixture
def store(tmp_path: Path) -> LabelStore:
    return LabelStore.create(tmp_path / "labels.zarr", PROVENANCE)


def test_written_labels_read_back_with_same_values_shape_and_dtype(store):
    labels = _labels(0, (70, 300))
    store.write(_id(1), labels, source="img.png")
    out = LabelStore.open(store.url).read(_id(1))
    assert out.dtype == np.uint8 and out.shape == (70, 300)
    assert np.array_equal(out, labels)


def test_read_window_returns_that_part_of_the_image(tmp_path):
    store = LabelStore.create(tmp_path / "s.zarr", PROVENANCE)
    labels = _labels(1, (100, 200))
    store.write(_id(1), labels, source="img.png")
    assert np.array_equal(store.read_window(_id(1), 20, 90, 33, 150), labels[20:90, 33:150])
    with pytest.raises(StoreError, match="outside"):
        store.read_window(_id(1), 0, 101, 0, 10)


def _chunk_files(store: LabelStore) -> list[Path]:
    return [p for p in (Path(store.url) / "labels").rglob("*") if p.is_file() and p.name != "zarr.json"]


def test_each_image_is_one_chunk_of_its_city_array(store):
    store.write(_id(1), _labels(1), source="img.png")
    store.write(_id(2), _labels(2), source="img.png")
    assert sorted(p.relative_to(store.url).as_posix() for p in _chunk_files(store)) == [
        f"labels/bremen/{H}x{W}/c.0.1.0.0", f"labels/bremen/{H}x{W}/c.0.2.0.0"]
    array = zarr.open_array(LocalStore(store.url, read_only=True), path=f"labels/bremen/{H}x{W}", mode="r")
    assert np.array_equal(array[0, 2], _labels(2))


def test_zstd_store_uses_only_zarr_v3_specification_codecs(tmp_path):
    store = LabelStore.create(tmp_path / "s.zarr", PROVENANCE, codec="zstd")
    store.write(_id(1), _labels(1), source="img.png")
    metadata = json.loads((Path(store.url) / "labels" / "bremen" / f"{H}x{W}" / "zarr.json").read_text())
    assert [c["name"] for c in metadata["codecs"]] == ["bytes", "zstd"]
    assert metadata["chunk_grid"]["configuration"]["chunk_shape"] == [1, 1, H, W]


@pytest.mark.parametrize("codec", ["context", "zstd", "webp", "jpegxl"])
def test_every_codec_stores_maps_losslessly(tmp_path, codec):
    store = LabelStore.create(tmp_path / "s.zarr", PROVENANCE, codec=codec)
    labels = _labels(4, (70, 300))
    store.write(_id(1), labels, source="img.png")
    assert np.array_equal(LabelStore.open(store.url).read(_id(1)), labels)


def test_unknown_codec_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(ValueError, match="context, zstd, webp, jpegxl"):
        LabelStore.create(tmp_path / "s.zarr", PROVENANCE, codec="png")


@pytest.mark.parametrize("bad", [NUM_CLASSES, 100, IGNORE - 1])
def test_label_values_between_classes_and_ignore_are_rejected(store, bad):
    labels = _labels(0)
    labels[5, 5] = bad
    with pytest.raises(ValueError, match=str(bad)):
        store.write(_id(1), labels, source="img.png")
    assert store.completed_ids() == set()


def test_labels_that_are_not_2d_uint8_are_rejected(store):
    with pytest.raises(ValueError, match="uint8"):
        store.write(_id(1), _labels(0).astype(np.int32), source="img.png")


@pytest.mark.parametrize("image_id", ["../escape_000000_000001", "a/b", "bremen_000000_000001/../x", ""])
def test_image_ids_that_are_not_cityscapes_stems_are_rejected(store, image_id):
    with pytest.raises(DatasetError):
        store.write(image_id, _labels(0), source="img.png")


def test_image_whose_record_was_never_written_is_missing_and_rewritten(store):
    array = zarr.create_array(store._zstore, name=f"labels/bremen/{H}x{W}", shape=(10, 10, H, W), chunks=(1, 1, H, W),
                              chunk_key_encoding={"name": "default", "separator": "."}, dtype="uint8")
    array[0, 1] = 3  # the chunk of _id(1), written by a run killed before its record
    assert _id(1) not in store.completed_ids()
    with pytest.raises(ImageNotStoredError, match="not stored"):
        store.read(_id(1))
    labels = _labels(2)
    store.write(_id(1), labels, source="img.png")
    assert store.completed_ids() == {_id(1)}
    assert np.array_equal(store.read(_id(1)), labels)


def test_writing_the_same_image_twice_gives_the_same_store(store):
    labels = _labels(3)
    store.write(_id(1), labels, source="img.png")
    first = store.nbytes_on_disk("labels/", metadata=False)
    store.write(_id(1), labels, source="img.png")
    assert store.nbytes_on_disk("labels/", metadata=False) == first
    assert np.array_equal(store.read(_id(1)), labels)
    assert [r.image_id for r in store.records()] == [_id(1)]


def test_record_holds_provenance_and_label_statistics(store):
    labels = np.full((H, W), IGNORE, dtype=np.uint8)
    labels[:16] = 0
    labels[16:24, :64] = 18
    record = store.write(_id(1), labels, source="/data/img.png", mean_confidence=0.8)
    assert store.record(_id(1)) == record
    assert record.status == "done" and record.source == "/data/img.png"
    assert (record.height, record.width) == (H, W)
    assert record.class_pixels[0] == 16 * W and record.class_pixels[18] == 8 * 64
    assert sum(record.class_pixels) == 16 * W + 8 * 64
    assert record.labelled_fraction == pytest.approx((16 * W + 8 * 64) / (H * W))
    assert (record.checkpoint_sha256, record.scales, record.threshold) == ("ab" * 32, (1.0, 0.5), 0.5)
    assert record.mean_confidence == 0.8 and record.error is None
    assert record.centroid_map == {0: (8, 64), 18: (20, 32)}


def test_manifest_has_one_row_per_image_with_the_record_columns(store):
    for i in range(3):
        store.write(_id(i), _labels(i), source=f"img{i}.png")
    store.write_failure(_id(9), "broken.png", "not a readable image")
    written = store.write_manifest()
    table = store.manifest()
    assert table.equals(written) and table.schema.equals(MANIFEST_SCHEMA)
    assert pq.read_table(store.manifest_url).to_pylist() == table.to_pylist()  # any Parquet reader: same rows
    assert table.column_names == [f for f in ImageRecord.__dataclass_fields__]
    assert table.column("image_id").to_pylist() == [_id(0), _id(1), _id(2), _id(9)]
    assert table.column("status").to_pylist() == ["done"] * 3 + ["failed"]
    assert table.column("class_pixels").to_pylist()[0] == list(store.record(_id(0)).class_pixels)


def test_manifest_before_write_manifest_is_an_error(store):
    with pytest.raises(StoreError, match="no manifest"):
        store.manifest()


def test_failed_image_is_recorded_without_labels(store):
    store.write(_id(1), _labels(1), source="img.png")
    record = store.write_failure(_id(1), "img.png", "decode error")
    assert store.failed_ids() == {_id(1)} and store.completed_ids() == set()
    assert store.records() == [record]
    assert record.status == "failed" and record.error == "decode error" and record.class_pixels is None
    with pytest.raises(ImageNotStoredError):
        store.read(_id(1))


def test_a_failed_image_written_later_is_no_longer_failed(store):
    store.write_failure(_id(1), "img.png", "timeout")
    store.write(_id(1), _labels(1), source="img.png")
    assert store.failed_ids() == set()
    assert [r.status for r in store.records()] == ["done"]


def test_provenance_is_stored_and_a_different_run_is_detected(store):
    assert LabelStore.open(store.url).provenance == PROVENANCE
    assert LabelStore.open_or_create(store.url, PROVENANCE).provenance == PROVENANCE
    other = Provenance(checkpoint_sha256="cd" * 32, scales=(1.0,), threshold=0.9, pointrend=True)
    with pytest.raises(ProvenanceMismatchError, match="checkpoint_sha256.*scales.*threshold"):
        LabelStore.open_or_create(store.url, other)


def test_resuming_with_another_codec_is_a_mismatch(store):
    with pytest.raises(ProvenanceMismatchError, match="codec: store has 'context', run has 'zstd'"):
        LabelStore.open_or_create(store.url, PROVENANCE, codec="zstd")
    assert LabelStore.open_or_create(store.url, PROVENANCE).codec.name == "context"


def test_creating_where_a_store_exists_needs_overwrite(store):
    store.write(_id(1), _labels(1), source="img.png")
    with pytest.raises(StoreError, match="already exists"):
        LabelStore.create(store.url, PROVENANCE)
    fresh = LabelStore.create(store.url, PROVENANCE, overwrite=True)
    assert fresh.completed_ids() == set()


def test_records_written_since_the_manifest_are_in_the_index(store):
    store.write(_id(1), _labels(1), source="img.png")
    store.write_manifest()
    store.write(_id(2), _labels(2), source="img.png")  # a run cut short before its manifest
    store.write_failure(_id(1), "img.png", "unreadable")
    reader = LabelStore.open(store.url)
    assert (reader.completed_ids(), reader.failed_ids()) == ({_id(2)}, {_id(1)})
    assert reader.index().column("image_id").to_pylist() == [_id(1), _id(2)]


def test_write_manifest_folds_the_records_in_and_deletes_their_files(store):
    for i in range(3):
        store.write(_id(i), _labels(i), source="img.png")
    assert len(list((Path(store.url) / "records").iterdir())) == 3
    store.write_manifest()
    assert list((Path(store.url) / "records").iterdir()) == []
    assert LabelStore.open(store.url).completed_ids() == {_id(i) for i in range(3)}


def test_fold_cut_short_before_the_records_are_deleted_loses_nothing(store, monkeypatch):
    """The manifest is replaced atomically before the records it holds are deleted: a crash in between
    leaves both, which index the same images once; the next fold deletes the records."""
    store.write(_id(1), _labels(1), source="a.png")
    store.write_manifest()
    store.write(_id(1), _labels(5), source="b.png")  # rewritten since the manifest
    store.write(_id(2), _labels(2), source="c.png")

    async def die(*args):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr("autolabel.store._delete_all", die)
        with pytest.raises(Killed):
            store.write_manifest()
    reader = LabelStore.open(store.url)
    assert reader.index().column("image_id").to_pylist() == [_id(1), _id(2)]
    assert reader.record(_id(1)).source == "b.png"
    store.write_manifest()
    assert list((Path(store.url) / "records").iterdir()) == []
    assert LabelStore.open(store.url).index().column("source").to_pylist() == ["b.png", "c.png"]


def test_fold_cut_short_while_writing_the_manifest_keeps_the_old_manifest_and_the_records(store, monkeypatch):
    store.write(_id(1), _labels(1), source="a.png")
    store.write_manifest()
    store.write(_id(2), _labels(2), source="c.png")
    before = (Path(store.url) / "manifest.parquet").read_bytes()
    original_set = LocalStore.set

    async def die_on_manifest(self, key, value):
        if key == "manifest.parquet":
            raise Killed
        await original_set(self, key, value)

    with monkeypatch.context() as patch:
        patch.setattr(LocalStore, "set", die_on_manifest)
        with pytest.raises(Killed):
            store.write_manifest()
    assert (Path(store.url) / "manifest.parquet").read_bytes() == before
    assert LabelStore.open(store.url).completed_ids() == {_id(1), _id(2)}


def test_manifest_costs_tens_of_bytes_per_image(tmp_path):
    """Counts and centroids differ per image; the fixed part (footer, one page per column) is a few kB."""
    rng = np.random.default_rng(0)

    def manifest_bytes(count: int) -> int:
        store = LabelStore.create(tmp_path / f"s{count}.zarr", PROVENANCE)
        records = [
            ImageRecord(
                image_id=_id(i), source=f"/data/leftImg8bit/train_extra/bremen/{_id(i)}_leftImg8bit.png",
                status="done", checkpoint_sha256=PROVENANCE.checkpoint_sha256, scales=PROVENANCE.scales,
                threshold=0.5, pointrend=True, started_at="2026-01-01T00:00:00+00:00",
                finished_at="2026-01-01T00:00:01+00:00", height=1024, width=2048, labelled_fraction=0.9,
                mean_confidence=float(rng.uniform()), class_pixels=tuple(int(c) for c in rng.integers(0, 10**5, 19)),
                centroids=tuple((c, int(rng.integers(1024)), int(rng.integers(2048))) for c in range(12)),
            )
            for i in range(count)
        ]
        for record in records:
            store._write_record(record)
        store.write_manifest()
        return (Path(store.url) / "manifest.parquet").stat().st_size

    small, large = manifest_bytes(20), manifest_bytes(220)
    assert (large - small) / 200 < 120  # random counts and centroids: real ones compress better
    assert small - 20 * (large - small) / 200 < 5000


class Killed(Exception):
    """Stands in for the process dying in the middle of a wipe."""


def test_overwrite_cut_short_leaves_a_store_that_overwrite_replaces(store, monkeypatch):
    store.write(_id(1), _labels(1), source="img.png")
    store.write_manifest()
    deleted = []
    real_delete = LocalStore.delete

    async def delete_one_then_stop(self, key):
        if deleted:
            raise Killed
        deleted.append(key)
        await real_delete(self, key)

    with monkeypatch.context() as patch:
        patch.setattr(LocalStore, "delete", delete_one_then_stop)
        with pytest.raises(Killed):
            LabelStore.create(store.url, PROVENANCE, overwrite=True)
    assert deleted and LabelStore.open(store.url).provenance == PROVENANCE
    assert LabelStore.create(store.url, PROVENANCE, overwrite=True).completed_ids() == set()


def test_overwrite_replaces_a_finished_store_with_its_manifest(store):
    store.write(_id(1), _labels(1), source="img.png")
    store.write_manifest()
    replaced = LabelStore.create(store.url, PROVENANCE, overwrite=True)
    assert replaced.completed_ids() == set()


def test_overwrite_refuses_to_delete_what_is_not_a_label_store(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="no label store"):
        LabelStore.create(tmp_path, PROVENANCE, overwrite=True)
    assert (tmp_path / "notes.txt").exists()


def test_opening_a_missing_store_names_it(tmp_path):
    with pytest.raises(StoreError, match="missing.zarr"):
        LabelStore.open(tmp_path / "missing.zarr")


def test_store_opened_read_only_refuses_writes(store):
    with pytest.raises(StoreError, match="read-only"):
        LabelStore.open(store.url, "r").write(_id(1), _labels(1), source="img.png")


def test_confidence_maps_are_kept_when_the_store_keeps_them(tmp_path):
    provenance = Provenance("ab" * 32, (1.0,), 0.5, False, keep_confidence=True)
    store = LabelStore.create(tmp_path / "s.zarr", provenance)
    labels = _labels(1)
    confidence = np.where(labels == IGNORE, 0, np.random.default_rng(0).integers(5, 10, size=(H, W))).astype(np.uint8)
    store.write(_id(1), labels, source="img.png", confidence=confidence, mean_confidence=0.7)
    kept = np.select([labels == IGNORE, confidence >= 9], [0, 9], 5)
    assert np.array_equal(store.read_confidence(_id(1)), kept)
    assert store.record(_id(1)).mean_confidence == 0.7
    with pytest.raises(StoreError, match="keeps confidence"):
        store.write(_id(2), _labels(2), source="img.png")


@pytest.mark.parametrize(("threshold", "acts_as"), [(0.5, 0.5), (0.6, 0.9), (0.7, 0.9), (0.8, 0.9), (0.9, 0.9)])
def test_kept_confidence_rethresholds_exactly_at_0_9_and_others_as_0_9(threshold, acts_as):
    labels = _labels(3)
    confidence = np.where(labels == IGNORE, 0, np.random.default_rng(3).integers(5, 10, size=(H, W))).astype(np.uint8)
    kept = np.where(labels == IGNORE, 0, kept_confidence(labels, confidence, 0.5))
    assert np.array_equal(rethreshold(labels, kept, threshold)[0], rethreshold(labels, confidence, acts_as)[0])


def test_kept_confidence_of_a_store_below_0_5_also_answers_0_5():
    labels = np.zeros((1, 10), np.uint8)
    confidence = np.arange(10, dtype=np.uint8)[None]  # a store at 0.0: every step
    assert kept_confidence(labels, confidence, 0.0).tolist() == [[0, 0, 0, 0, 0, 5, 5, 5, 5, 9]]


def test_kept_confidence_of_a_stricter_store_keeps_only_the_thresholds_above_its_own():
    labels = np.zeros((2, 4), np.uint8)
    confidence = np.array([[7, 8, 9, 9], [7, 7, 8, 9]], np.uint8)  # a store at 0.7 labels p > 0.7: steps >= 7
    assert np.array_equal(kept_confidence(labels, confidence, 0.7), [[7, 7, 9, 9], [7, 7, 7, 9]])  # 0.9 only


def test_memory_url_store_round_trips(tmp_path):
    url = f"memory://{tmp_path.name}/labels.zarr"
    store = LabelStore.create(url, PROVENANCE)
    store.write(_id(1), _labels(1), source="img.png")
    store.write_manifest()
    reopened = LabelStore.open(url)
    assert np.array_equal(reopened.read(_id(1)), _labels(1))
    assert reopened.manifest().num_rows == 1
    assert reopened.nbytes_on_disk() > 0


def _write_images(url: str, ids: list[int], start: Barrier) -> None:
    store = LabelStore.open(url, "a")
    start.wait()
    for i in ids:
        store.write(_id(i), _labels(i), source=f"img{i}.png")


def test_processes_writing_different_images_at_once_lose_nothing(store):
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(4)
    workers = [
        ctx.Process(target=_write_images, args=(store.url, list(range(w, 16, 4)), start)) for w in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert store.completed_ids() == {_id(i) for i in range(16)}
    for i in range(16):
        assert np.array_equal(store.read(_id(i)), _labels(i))
    assert store.write_manifest().num_rows == 16
