import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from autolabel.errors import DatasetError
from autolabel.images import ImageReadError, encode_png, image_shape, read_image, read_label, write_png


def test_rgb_image_round_trips_through_png(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (8, 16, 3), dtype=np.uint8)
    write_png(tmp_path / "a.png", rgb)
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)


def test_truncated_image_is_named_in_error(tmp_path):
    data = encode_png(np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8))
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.png"):
        read_image(tmp_path / "t.png")


def test_empty_image_is_an_error(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "e.png")


def test_missing_image_is_an_error(tmp_path):
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_label_of_other_size_than_its_image_is_an_error(tmp_path):
    write_png(tmp_path / "l.png", np.zeros((4, 8), np.uint8))
    with pytest.raises(DatasetError, match="8x4 but its image is 16x8"):
        read_label(tmp_path / "l.png", shape=(8, 16))


def test_label_keeps_single_channel_values(tmp_path):
    label = np.array([[7, 8], [26, 0]], np.uint8)
    write_png(tmp_path / "l.png", label)
    assert np.array_equal(read_label(tmp_path / "l.png"), label)


def test_image_shape_is_height_and_width_from_the_header(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((8, 16, 3), np.uint8))
    assert image_shape(tmp_path / "a.png") == (8, 16)


def test_image_shape_of_a_truncated_file_is_named_in_error(tmp_path):
    data = encode_png(np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8))
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.png.*truncated"):
        image_shape(tmp_path / "t.png")


def test_image_shape_of_an_empty_file_is_named_in_error(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="e.png"):
        image_shape(tmp_path / "e.png")


def test_a_16_bit_label_png_is_refused_instead_of_wrapped(tmp_path):
    path = tmp_path / "deep_gtFine_labelIds.png"
    cv2.imwrite(str(path), np.full((4, 4), 300, np.uint16))
    with pytest.raises(DatasetError, match="8-bit"):
        read_label(path)


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (a decompression bomb's header)."""
    png = bytearray(encode_png(np.zeros((1, 1), np.uint8)))
    ihdr = 12  # 8-byte signature, 4-byte chunk length
    png[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    png[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(png[ihdr: ihdr + 17])))
    return bytes(png)


def test_an_image_whose_header_claims_too_many_pixels_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb_leftImg8bit.png"
    path.write_bytes(_png_claiming(30000, 30000))
    with pytest.raises(ImageReadError, match="header claims"):
        read_image(path)
    with pytest.raises(ImageReadError, match="header claims"):
        image_shape(path)


def test_a_fifo_is_refused_as_not_a_regular_file_instead_of_blocking(tmp_path):
    path = tmp_path / "pipe_leftImg8bit.png"
    os.mkfifo(path)
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(path)


def test_a_label_png_with_ids_outside_the_schema_is_refused_naming_them(tmp_path):
    path = tmp_path / "l_gtFine_labelIds.png"
    write_png(path, np.array([[7, 8], [40, 200]], np.uint8))
    with pytest.raises(DatasetError, match="40, 200"):
        read_label(path)


def test_a_label_png_with_every_schema_id_and_the_license_plate_reads(tmp_path):
    path = tmp_path / "l_gtFine_labelIds.png"
    ids = np.array([list(range(34)) + [255]], np.uint8)
    write_png(path, ids)
    assert (read_label(path) == ids).all()
