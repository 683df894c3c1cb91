"""The context coder of label maps: lossless on any map, small on street scenes, loud on bytes it did not write."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import zarr

import autolabel.codecs  # noqa: F401  (registers autolabel.context with zarr)
from autolabel import context_coder
from autolabel.codecs import ChunkShapeError, ContextCodec
from autolabel.context_coder import CorruptMapError, _varint, decode_map, encode_map, map_shape
from autolabel.labels import IGNORE
from autolabel.store import LabelStore, Provenance, array_path
from autolabel.synth.config import SynthConfig
from autolabel.synth.sample import render_sample

PROVENANCE = Provenance(checkpoint_sha256="ab" * 32, scales=(1.0,), threshold=0.5, pointrend=False)


def _blocks(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Rectangles of a few labels and ignore, as a thresholded map has."""
    rng = np.random.default_rng(seed)
    labels = np.full(shape, 7, np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        labels[y:y + rng.integers(1, 20), x:x + rng.integers(1, 40)] = rng.choice([0, 2, 11, 13, IGNORE])
    return labels


def _contents(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    return {"noise": rng.integers(0, 256, shape, dtype=np.uint8), "zeros": np.zeros(shape, np.uint8),
            "ignore": np.full(shape, IGNORE, np.uint8), "blocks": _blocks(shape, 0),
            "stripes": (np.arange(shape[1], dtype=np.uint8) % 3 * 80)[None].repeat(shape[0], 0)}


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (3, 17), (33, 8), (70, 301)])
@pytest.mark.parametrize("content", ["noise", "zeros", "ignore", "blocks", "stripes"])
def test_maps_decode_exactly_at_any_shape_and_content(shape, content):
    labels = _contents(shape)[content]
    np.testing.assert_array_equal(decode_map(encode_map(labels)), labels)


def test_noise_that_outgrows_the_first_buffer_still_decodes():
    labels = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    data = encode_map(labels)
    assert len(data) > labels.size + 64  # more than the encoder's first buffer: 8 bits a pixel
    np.testing.assert_array_equal(decode_map(data), labels)


def test_street_scene_maps_take_well_under_half_the_bytes_of_png():
    config = SynthConfig(train_extra=4, height=256, width=512)
    maps = [render_sample(config, "train_extra", i).fine_ids for i in range(4)]
    png = sum(len(cv2.imencode(".png", m, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1]) for m in maps)
    coded = sum(len(encode_map(m)) for m in maps)
    assert coded < 0.5 * png


def test_coded_map_names_its_size():
    assert map_shape(encode_map(np.zeros((37, 5), np.uint8))) == (37, 5)


def test_maps_must_be_two_dimensional_uint8():
    with pytest.raises(ValueError, match="uint8"):
        encode_map(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        encode_map(np.zeros((2, 4, 4), np.uint8))


@pytest.mark.parametrize("damage", ["truncated", "other format", "empty", "altered start"])
def test_bytes_it_did_not_write_raise_corrupt_map_error(damage):
    data = encode_map(_blocks((60, 90), 3))
    bad = {"truncated": data[: len(data) // 2], "other format": b"\x89PNG" + data[4:], "empty": b"",
           "altered start": data[:3] + b"\x07" + data[4:]}[damage]
    with pytest.raises(CorruptMapError):
        decode_map(bad)


def test_a_header_naming_a_huge_map_is_refused_before_decoding():
    data = bytes([1]) + _varint(100_000) + _varint(100_000) + bytes(5)
    with pytest.raises(CorruptMapError, match="100000x100000"):
        decode_map(data)


def test_read_only_and_strided_maps_code_as_their_copies():
    labels = _blocks((40, 70), 9)
    frozen = labels.copy()
    frozen.flags.writeable = False
    expected = encode_map(labels)
    assert encode_map(frozen) == expected
    assert encode_map(np.asfortranarray(labels)) == expected
    np.testing.assert_array_equal(decode_map(np.frombuffer(expected, np.uint8)), labels)  # any bytes-like


def test_without_a_writable_cache_folder_the_coder_compiles_per_process(monkeypatch):
    calls = []

    def njit(cache, **options):
        calls.append(cache)
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available")
        return lambda fn: fn

    monkeypatch.setattr(context_coder, "njit", njit)
    assert context_coder.compiled()(len)("abc") == 3
    assert calls == [True, False]


def test_chunk_of_another_size_raises_chunk_shape_error():
    codec = ContextCodec()
    data = codec._encode_plane(np.zeros((8, 16), np.uint8))
    with pytest.raises(ChunkShapeError, match="8x16, expected 16x8"):
        codec._decode_sync(_Buffer(data), _Spec((1, 1, 16, 8)))


def test_new_stores_record_the_context_codec_and_zarr_python_reads_them(tmp_path):
    labels = _blocks((40, 64), 5)
    store = LabelStore.create(tmp_path / "s.zarr", PROVENANCE)
    store.write("ulm_000002_000019", labels, source="a.png")
    path = Path(store.url) / array_path("labels", "ulm", 40, 64)
    metadata = json.loads((path / "zarr.json").read_text())
    assert [c["name"] for c in metadata["codecs"]] == ["autolabel.context"]
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[2, 19], labels)


class _Buffer:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def to_bytes(self) -> bytes:
        return self.data


class _Spec:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
