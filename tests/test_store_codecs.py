"""The image codecs of a label store: WebP's packed rows, and arrays written before packing."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autolabel.codecs import WEBP_QUALITY, WebpCodec, pack_rows, unpack_rows
from autolabel.labels import IGNORE
from autolabel.store import LabelStore, Provenance, array_path

PROVENANCE = Provenance(checkpoint_sha256="ab" * 32, scales=(1.0,), threshold=0.5, pointrend=False)


def test_webp_image_holds_four_map_rows_per_pixel_row_as_rgba():
    plane = np.arange(6 * 3, dtype=np.uint8).reshape(6, 3)
    image = pack_rows(plane, 4)
    assert image.shape == (2, 3, 4)
    np.testing.assert_array_equal(image[0, 1], plane[0:4, 1])  # R, G, B, A = rows 0..3 of column 1
    last = [plane[4, 2], plane[5, 2], plane[5, 2], plane[5, 2]]  # the last map row repeated
    np.testing.assert_array_equal(image[1, 2], last)


@pytest.mark.parametrize("height", [1, 2, 3, 4, 5, 7, 9])
def test_packed_rows_unpack_to_the_map_at_any_height(height):
    plane = np.random.default_rng(height).integers(0, 256, (height, 5), dtype=np.uint8)
    np.testing.assert_array_equal(unpack_rows(pack_rows(plane, 4), 4, height), plane)


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (33, 8)])
@pytest.mark.parametrize("fill", [0, IGNORE, None])
def test_webp_codec_is_lossless_at_any_shape_and_alpha(shape, fill):
    """A row group whose alpha row is all 255 (or all 0) still decodes exactly."""
    rng = np.random.default_rng(0)
    plane = rng.integers(0, 256, shape, dtype=np.uint8) if fill is None else np.full(shape, fill, np.uint8)
    codec = WebpCodec(level=2, rows=4)
    np.testing.assert_array_equal(codec._decode_plane(codec._encode_plane(plane), shape), plane)


def test_new_webp_arrays_record_method_quality_and_packing(tmp_path):
    store = LabelStore.create(tmp_path / "s.zarr", PROVENANCE, codec="webp")
    store.write("ulm_000001_000019", np.zeros((8, 16), np.uint8), source="a.png")
    metadata = json.loads((Path(store.url) / array_path("labels", "ulm", 8, 16) / "zarr.json").read_text())
    assert metadata["codecs"] == [
        {"name": "autolabel.webp", "configuration": {"level": 2, "quality": WEBP_QUALITY, "rows": 4}}
    ]


def test_webp_arrays_written_before_row_packing_still_read(tmp_path):
    """Their codec configuration holds only the level: one map row per WebP row, grey as RGB."""
    labels = np.full((10, 24), IGNORE, np.uint8)
    labels[2:7, 3:20] = 11
    store = LabelStore.create(tmp_path / "s.zarr", PROVENANCE, codec="webp")
    record = store.write("ulm_000001_000019", labels, source="a.png")  # makes the array and the record
    store._write_record(replace(record, labels_crc32=None))  # records of that time held no checksums
    path = Path(store.url) / array_path("labels", "ulm", 10, 24)
    metadata = json.loads((path / "zarr.json").read_text())
    metadata["codecs"] = [{"name": "autolabel.webp", "configuration": {"level": 2}}]
    (path / "zarr.json").write_text(json.dumps(metadata))
    old = WebpCodec(level=2)  # rows=1: how those arrays were written
    (path / "c.1.19.0.0").write_bytes(old._encode_plane(labels))
    np.testing.assert_array_equal(LabelStore.open(store.url).read("ulm_000001_000019"), labels)
