"""How a label store compresses its maps: the codec choices and the zarr v3 codecs behind them.

Every map is one chunk, compressed whole (the unit that wins against PNG; see benchmarks/storage.py):

    zstd    bytes + zstd: codecs of the zarr v3 specification only, so any zarr v3 reader opens the
            store (zarr-python, tensorstore, zarrs)
    webp    WebP lossless (libwebp through imagecodecs) as the zarr v3 array->bytes codec
            "autolabel.webp"; zarr-python reads it once `autolabel.codecs` is imported
    jpegxl  JPEG XL lossless (libjxl through imagecodecs) as "autolabel.jpegxl"; the smallest, but
            encodes and decodes an order of magnitude slower than the others

The image codecs take a chunk whose last two axes are the map (H, W); every other axis has length 1.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import imagecodecs
import numpy as np
from zarr.abc.codec import ArrayBytesCodec, Codec
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import parse_named_configuration
from zarr.registry import register_codec

from autolabel.errors import ConfigError


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
    def _decode_plane(self, data: bytes) -> np.ndarray:
        """The codec's bytes back as the (H, W) uint8 map."""

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        shape = chunk_spec.shape
        if math.prod(shape[:-2]) != 1:
            raise ValueError(f"{self.codec_name} encodes one (H, W) map per chunk, got chunk shape {shape}")
        plane = np.ascontiguousarray(chunk_array.as_numpy_array().reshape(shape[-2:]))
        return chunk_spec.prototype.buffer.from_bytes(self._encode_plane(plane))

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        plane = self._decode_plane(chunk_bytes.to_bytes())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(plane.reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        return self._encode_sync(chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        # zarr's contract for codecs whose output size depends on the data, as its own ZstdCodec does
        raise NotImplementedError(f"{self.codec_name} output has no size known before encoding")


class WebpCodec(_ImageCodec):
    """WebP lossless; `level` is libwebp's method (0 fastest .. 6 smallest). The map is given to libwebp
    as a grey RGB image, which it stores as a palette of the map's values."""

    codec_name = "autolabel.webp"

    def _encode_plane(self, plane: np.ndarray) -> bytes:
        rgb = np.repeat(plane[..., None], 3, axis=2)  # (H, W, 3)
        return imagecodecs.webp_encode(rgb, lossless=True, method=self.level)

    def _decode_plane(self, data: bytes) -> np.ndarray:
        return np.ascontiguousarray(imagecodecs.webp_decode(data)[..., 0])


class JpegxlCodec(_ImageCodec):
    """JPEG XL lossless of the grey map; `level` is libjxl's effort (1 fastest .. 9 smallest)."""

    codec_name = "autolabel.jpegxl"

    def _encode_plane(self, plane: np.ndarray) -> bytes:
        return imagecodecs.jpegxl_encode(plane, lossless=True, effort=self.level, numthreads=1)

    def _decode_plane(self, data: bytes) -> np.ndarray:
        return imagecodecs.jpegxl_decode(data, numthreads=1)


register_codec(WebpCodec.codec_name, WebpCodec)
register_codec(JpegxlCodec.codec_name, JpegxlCodec)


@dataclass(frozen=True)
class CodecChoice:
    """One value of `--codec`: the zarr codecs of its arrays and what another reader needs to open them."""

    name: str
    default_level: int
    levels: tuple[int, int]
    reader: str

    def codecs(self, level: int | None = None) -> list[Codec]:
        """The zarr v3 codec chain of an array at `level` (default: the choice's default)."""
        level = self.default_level if level is None else level
        if not self.levels[0] <= level <= self.levels[1]:
            raise ConfigError(f"{self.name} level must be in {self.levels[0]}..{self.levels[1]}, got {level}")
        if self.name == "zstd":
            return [BytesCodec(), ZstdCodec(level=level, checksum=False)]
        return [(WebpCodec if self.name == "webp" else JpegxlCodec)(level=level)]


CODECS: dict[str, CodecChoice] = {
    "zstd": CodecChoice("zstd", 19, (1, 22), "any zarr v3 reader (zarr-python, tensorstore, zarrs): spec codecs only"),
    "webp": CodecChoice("webp", 2, (0, 6), "zarr-python with autolabel installed (`import autolabel.codecs` "
                                            "registers the autolabel.webp codec; it decodes with imagecodecs)"),
    "jpegxl": CodecChoice("jpegxl", 7, (1, 9), "zarr-python with autolabel installed (`import autolabel.codecs` "
                                                "registers the autolabel.jpegxl codec; it decodes with imagecodecs)"),
}
DEFAULT_CODEC = "webp"
"""From benchmarks/storage.py: WebP lossless stores the smallest maps of the codecs that keep the write and
read speeds (see the README's label storage table)."""


def codec_choice(name: str) -> CodecChoice:
    """The CodecChoice called `name`; a ValueError names the choices."""
    try:
        return CODECS[name]
    except KeyError:
        raise ConfigError(f"unknown codec {name!r}; expected one of {', '.join(CODECS)}") from None
