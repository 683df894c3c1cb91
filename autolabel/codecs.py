"""How a label store compresses its maps: the codec choices and the zarr v3 codecs behind them.

Every map is one chunk, compressed whole (the unit that wins against PNG; see benchmarks/storage.py):

    context each pixel predicted from its decoded neighbours and arithmetic-coded (autolabel.context_coder)
            as the zarr v3 array->bytes codec "autolabel.context": 0.2-0.3x the bytes of PNG, 0.6x of webp,
            and faster to write and read; zarr-python reads it once `autolabel.codecs` is imported
    zstd    bytes + zstd: codecs of the zarr v3 specification only, so any zarr v3 reader opens the
            store (zarr-python, tensorstore, zarrs)
    webp    WebP lossless (libwebp through imagecodecs) as the zarr v3 array->bytes codec
            "autolabel.webp"; zarr-python reads it once `autolabel.codecs` is imported. The map
            goes to libwebp with four rows per pixel row, as RGBA:

                map (H, W)                     WebP image (ceil(H/4), W, RGBA)
                row 4i   a a a b b ...    ->   row i: (a,c,e,g) (a,c,e,g) ... R = row 4i, G = 4i+1,
                row 4i+1 c c c b b ...                                        B = 4i+2, A = 4i+3
                row 4i+2 e e ...
                row 4i+3 g g ...
            the default before context
    jpegxl  JPEG XL lossless (libjxl through imagecodecs) as "autolabel.jpegxl": no smaller than
            webp's packed rows, and an order of magnitude slower to encode and decode

The image codecs take a chunk whose last two axes are the map (H, W); every other axis has length 1. A chunk
that decodes to an image of another size raises ChunkShapeError instead of being cropped or padded.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import imagecodecs
import numpy as np
from zarr.abc.codec import ArrayBytesCodec, Codec
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import parse_named_configuration
from zarr.registry import register_codec

from autolabel.context_coder import decode_map, encode_map, map_shape
from autolabel.errors import ConfigError

WEBP_QUALITY = 50
"""libwebp's lossless effort: 25 stores 2-4% more bytes, 75 no fewer (benchmarks/storage.py)."""
WEBP_ROWS = (1, 4)
"""Map rows per WebP pixel row: 4 (RGBA) for new arrays, 1 (grey as RGB) in stores written before."""
WEBP_PACKED_ROWS = 4


class ChunkShapeError(ValueError):
    """A chunk decodes to an image of another size than its array's chunks (e.g. another image's chunk)."""


def check_decoded_shape(codec_name: str, decoded: tuple[int, ...], expected: tuple[int, ...]) -> None:
    """Raise ChunkShapeError when an image codec decoded a `decoded` image where `expected` belongs."""
    if tuple(decoded) != tuple(expected):
        raise ChunkShapeError(f"{codec_name} chunk decodes to {'x'.join(map(str, decoded))}, expected "
                              f"{'x'.join(map(str, expected))}")


class _ImageCodec(ArrayBytesCodec):
    """A uint8 map (1, ..., 1, H, W) as one lossless image; subclasses name the codec and its coder."""

    is_fixed_size = False
    codec_name: ClassVar[str]
    level: int

    def __init__(self, *, level: int) -> None:
        object.__setattr__(self, "level", int(level))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _ImageCodec:
        _, configuration = parse_named_configuration(data, cls.codec_name)
        return cls(**configuration)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.codec_name, "configuration": {"level": self.level}}

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        if np.dtype(dtype.to_native_dtype()) != np.uint8:
            raise ValueError(f"{self.codec_name} stores uint8 maps, not {dtype}")

    @abstractmethod
    def _encode_plane(self, plane: np.ndarray) -> bytes:
        """The (H, W) uint8 map as the codec's bytes."""

    @abstractmethod
    def _decode_plane(self, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        """The codec's bytes back as the (H, W) uint8 map of `shape`."""

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        shape = chunk_spec.shape
        if math.prod(shape[:-2]) != 1:
            raise ValueError(f"{self.codec_name} encodes one (H, W) map per chunk, got chunk shape {shape}")
        plane = np.ascontiguousarray(chunk_array.as_numpy_array().reshape(shape[-2:]))
        return chunk_spec.prototype.buffer.from_bytes(self._encode_plane(plane))

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        plane = self._decode_plane(chunk_bytes.to_bytes(), chunk_spec.shape[-2:])
        check_decoded_shape(self.codec_name, plane.shape, chunk_spec.shape[-2:])
        return chunk_spec.prototype.nd_buffer.from_numpy_array(plane.reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        return self._encode_sync(chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        # zarr's contract for codecs whose output size depends on the data, as its own ZstdCodec does
        raise NotImplementedError(f"{self.codec_name} output has no size known before encoding")


class WebpCodec(_ImageCodec):
    """WebP lossless; `level` is libwebp's method (0 fastest .. 6 smallest), `quality` its effort (0..100).

    `rows` consecutive rows of the map are the channels of one image row: with rows=4 the (H, W) map is
    the RGBA image (ceil(H / 4), W, 4), its last row repeated to fill the last pixel row. WebP codes
    each image row against the one above, so one copy then spans four map rows: the maps come out
    0.35-0.55x of PNG, against 0.55-0.7x as a grey image (rows=1, the map replicated to RGB; stores
    written before packing; benchmarks/storage.py measures both).
    """

    codec_name = "autolabel.webp"
    quality: int
    rows: int

    def __init__(self, *, level: int, quality: int = WEBP_QUALITY, rows: int = 1) -> None:
        super().__init__(level=level)
        if rows not in WEBP_ROWS:
            raise ValueError(f"{self.codec_name} packs {' or '.join(map(str, WEBP_ROWS))} rows per pixel row, "
                             f"got {rows}")
        object.__setattr__(self, "quality", int(quality))
        object.__setattr__(self, "rows", int(rows))

    def to_dict(self) -> dict[str, Any]:
        configuration = {"level": self.level, "quality": self.quality, "rows": self.rows}
        return {"name": self.codec_name, "configuration": configuration}

    def _encode_plane(self, plane: np.ndarray) -> bytes:
        return imagecodecs.webp_encode(pack_rows(plane, self.rows), self.quality, lossless=True,
                                       method=self.level)

    def _decode_plane(self, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        image = imagecodecs.webp_decode(data, hasalpha=self.rows == 4)  # (ceil(H / rows), W, C)
        check_decoded_shape(self.codec_name, image.shape[:2], (-(-shape[0] // self.rows), shape[1]))
        return unpack_rows(image, self.rows, shape[0])


def pack_rows(plane: np.ndarray, rows: int) -> np.ndarray:
    """The (H, W) uint8 map as a (ceil(H / rows), W, C) image: rows=4 puts map rows 4i..4i+3 in the RGBA
    of image row i (the last map row repeated to a multiple of 4); rows=1 replicates the map to RGB."""
    if rows == 1:
        return np.repeat(plane[..., None], 3, axis=2)  # (H, W, 3)
    padded = -plane.shape[0] % rows
    if padded:
        plane = np.concatenate([plane, np.repeat(plane[-1:], padded, axis=0)])
    grouped = plane.reshape(-1, rows, plane.shape[1])  # (H/rows, rows, W)
    image = cv2.merge([np.ascontiguousarray(grouped[:, c]) for c in range(rows)])  # OpenCV: 10x numpy's copy
    return image.reshape(grouped.shape[0], grouped.shape[2], rows)  # (H/rows, W, rows), even where H/rows is 1


def unpack_rows(image: np.ndarray, rows: int, height: int) -> np.ndarray:
    """pack_rows undone: the (height, W) map of a (ceil(height / rows), W, C) image."""
    if rows == 1:
        return np.ascontiguousarray(image[..., 0])
    grouped = np.empty((image.shape[0], rows, image.shape[1]), np.uint8)  # (H/rows, rows, W)
    cv2.split(image, [grouped[:, c] for c in range(rows)])  # into the row views: no further copy
    return grouped.reshape(-1, image.shape[1])[:height]


class JpegxlCodec(_ImageCodec):
    """JPEG XL lossless of the grey map; `level` is libjxl's effort (1 fastest .. 9 smallest)."""

    codec_name = "autolabel.jpegxl"

    def _encode_plane(self, plane: np.ndarray) -> bytes:
        return imagecodecs.jpegxl_encode(plane, lossless=True, effort=self.level, numthreads=1)

    def _decode_plane(self, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        return imagecodecs.jpegxl_decode(data, numthreads=1)


class ContextCodec(_ImageCodec):
    """The map coded by autolabel.context_coder; its bytes carry their format and the map's size."""

    codec_name = "autolabel.context"

    def __init__(self, *, level: int = 0) -> None:
        super().__init__(level=level)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.codec_name, "configuration": {}}

    def _encode_plane(self, plane: np.ndarray) -> bytes:
        return encode_map(plane)

    def _decode_plane(self, data: bytes, shape: tuple[int, int]) -> np.ndarray:
        check_decoded_shape(self.codec_name, map_shape(data), shape)  # before decoding: nothing allocated for it
        return decode_map(data)


register_codec(ContextCodec.codec_name, ContextCodec)
register_codec(WebpCodec.codec_name, WebpCodec)
register_codec(JpegxlCodec.codec_name, JpegxlCodec)


@dataclass(frozen=True)
class CodecChoice:
    """One value of `--codec`: the zarr codecs of its arrays and what another reader needs to open them."""

    name: str
    default_level: int
    levels: tuple[int, int]
    reader: str

    @property
    def has_levels(self) -> bool:
        """Whether the codec takes a level (context has one way to code)."""
        return self.levels[0] != self.levels[1]

    def codecs(self, level: int | None = None) -> list[Codec]:
        """The zarr v3 codec chain of an array at `level` (default: the choice's default)."""
        level = self.default_level if level is None else level
        if not self.levels[0] <= level <= self.levels[1]:
            raise ConfigError(f"{self.name} level must be in {self.levels[0]}..{self.levels[1]}, got {level}")
        if self.name == "context":
            return [ContextCodec()]
        if self.name == "zstd":
            return [BytesCodec(), ZstdCodec(level=level, checksum=False)]
        if self.name == "webp":
            return [WebpCodec(level=level, rows=WEBP_PACKED_ROWS)]
        return [JpegxlCodec(level=level)]


CODECS: dict[str, CodecChoice] = {
    "context": CodecChoice("context", 0, (0, 0), "zarr-python with autolabel installed (`import autolabel.codecs` "
                                                  "registers the autolabel.context codec)"),
    "zstd": CodecChoice("zstd", 19, (1, 22), "any zarr v3 reader (zarr-python, tensorstore, zarrs): spec codecs only"),
    "webp": CodecChoice("webp", 2, (0, 6), "zarr-python with autolabel installed (`import autolabel.codecs` "
                                            "registers the autolabel.webp codec; it decodes with imagecodecs)"),
    "jpegxl": CodecChoice("jpegxl", 7, (1, 9), "zarr-python with autolabel installed (`import autolabel.codecs` "
                                                "registers the autolabel.jpegxl codec; it decodes with imagecodecs)"),
}
DEFAULT_CODEC = "context"
"""From benchmarks/storage.py: the context coder stores the smallest maps, and writes and reads them fastest
(see the README's label storage table)."""


def codec_choice(name: str) -> CodecChoice:
    """The CodecChoice called `name`; a ValueError names the choices."""
    try:
        return CODECS[name]
    except KeyError:
        raise ConfigError(f"unknown codec {name!r}; expected one of {', '.join(CODECS)}") from None
