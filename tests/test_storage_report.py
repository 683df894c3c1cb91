from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from autolabel.errors import StoreError
from autolabel.images import encode_png
from autolabel.labels import IGNORE, NUM_CLASSES, to_train_ids
from autolabel.storage_report import storage_report
from autolabel.store import LabelStore, Provenance
from cli import human_bytes, storage_table

PROVENANCE = Provenance(checkpoint_sha256="ab" * 32, scales=(1.0,), threshold=0.5, pointrend=False)
H, W = 64, 128


def _maps() -> list[np.ndarray]:
    """Two maps: road on the top half / sky below; car in a 16x32 box; the rest ignore."""
    first = np.full((H, W), IGNORE, dtype=np.uint8)
    first[:32] = 0
    first[32:] = 10
    second = np.full((H, W), IGNORE, dtype=np.uint8)
    second[8:24, 40:72] = 13
    return [first, second]


@pytest.fixture
def store(tmp_path: Path) -> LabelStore:
    store = LabelStore.create(tmp_path / "labels.zarr", PROVENANCE)
    for i, labels in enumerate(_maps()):
        store.write(f"ulm_000000_00000{i}", labels, source=f"{i}.png")
    store.write_failure("ulm_000000_000009", "9.png", "corrupt")
    return store


def _all_bytes(store: LabelStore) -> int:
    return sum(p.stat().st_size for p in Path(store.url).rglob("*") if p.is_file())


def test_report_counts_images_pixels_and_classes(store):
    report = storage_report(store)
    assert (report["images"], report["failed"], report["pixels"]) == (2, 1, 2 * H * W)
    assert report["class_pixels"]["road"] == 32 * W
    assert report["class_pixels"]["sky"] == 32 * W
    assert report["class_pixels"]["car"] == 16 * 32
    assert len(report["class_pixels"]) == NUM_CLASSES
    assert report["labelled_fraction"] == pytest.approx((H * W + 16 * 32) / (2 * H * W))


def test_headline_sizes_count_every_file_of_the_store(store):
    store.write_manifest()
    report = storage_report(store)
    everything = _all_bytes(store)
    assert report["bytes_on_disk"] == everything
    assert report["bytes_per_image"] == everything / 2
    assert report["bits_per_pixel"] == pytest.approx(8 * everything / (2 * H * W))
    maps = sum(p.stat().st_size for p in (Path(store.url) / "labels").rglob("*") if p.name != "zarr.json" and p.is_file())
    assert report["label_bytes"] == maps
    assert report["metadata_bytes"] == everything - maps


def test_savings_ratios_compare_the_same_maps_with_what_is_on_disk(store):
    report = storage_report(store)
    everything = _all_bytes(store)
    pixels = 2 * H * W
    assert report["vs_uint8"] == pytest.approx(pixels / everything)
    assert report["vs_soft_fp16"] == pytest.approx(pixels * NUM_CLASSES * 2 / everything)
    assert report["vs_soft_fp32"] == pytest.approx(pixels * NUM_CLASSES * 4 / everything)
    png = sum(len(encode_png(m)) for m in _maps())
    assert report["vs_png"] == pytest.approx(png / everything)


def test_report_names_the_codec_and_what_reads_it(tmp_path):
    store = LabelStore.create(tmp_path / "zstd.zarr", PROVENANCE, codec="zstd")
    store.write("ulm_000000_000001", _maps()[0], source="0.png")
    report = storage_report(store)
    assert (report["codec"], report["codec_level"]) == ("zstd", 19)
    assert "tensorstore" in report["reader"]


def test_report_gives_the_default_codec_no_level(store):
    report = storage_report(store)
    assert (report["codec"], report["codec_level"]) == ("context", None)
    assert "autolabel" in report["reader"]


def test_extrapolation_scales_the_measured_bits_per_pixel(store):
    big = storage_report(store)["extrapolation"]
    pixels = 19_998 * 1024 * 2048
    assert big["uint8_bytes"] == pixels
    assert big["soft_fp32_bytes"] == pixels * NUM_CLASSES * 4
    assert big["store_bytes"] == pytest.approx(pixels * _all_bytes(store) / (2 * H * W))


def test_png_sample_limits_the_images_reencoded(store):
    assert storage_report(store, png_sample=1)["png_sample_images"] == 1


def test_store_where_every_image_failed_is_an_error_counting_them(tmp_path):
    store = LabelStore.create(tmp_path / "failed.zarr", PROVENANCE)
    store.write_failure("bremen_000000_000001", "img.png", "unreadable")
    with pytest.raises(StoreError, match=r"no complete images to report on \(1 failed"):
        storage_report(store)


def test_table_shows_the_headline_numbers(store):
    console = Console(record=True, width=120)
    console.print(storage_table(storage_report(store)))
    text = console.export_text()
    assert "bits per pixel" in text and "vs soft fp32" in text and "class car" in text and "context" in text
    assert "19,998 x 2048x1024" in text


@pytest.mark.parametrize(
    ("n", "text"), [(950, "950 B"), (1500, "1.5 kB"), (6e8, "600.0 MB"), (2.1e12, "2.1 TB")]
)
def test_human_bytes_uses_decimal_units(n, text):
    assert human_bytes(n) == text


def test_default_store_holds_json2labelimg_maps_in_under_half_the_bytes_of_png_on_disk(tmp_path):
    """The store's promise, metadata included: fine maps of 512x1024 rasterised by cityscapesscripts, as the real
    gtFine are made (12 maps: the fixed ~4 kB of metadata is ~0.1x of PNG here, less in a real store)."""
    from autolabel.synth import SynthConfig, render_sample

    config = SynthConfig(train_extra=12, height=512, width=1024)
    store = LabelStore.create(tmp_path / "fine.zarr", PROVENANCE)
    for i in range(12):
        store.write(f"ulm_000000_{i:06d}", to_train_ids(render_sample(config, "train_extra", i).fine_ids),
                    source=f"{i}.png")
    store.write_manifest()
    report = storage_report(LabelStore.open(store.url), png_sample=12)
    assert report["vs_png"] >= 2.0  # on-disk bytes at most half of the same maps as PNG
