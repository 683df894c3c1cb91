"""Image and label-map IO through OpenCV, with errors that name the file."""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from autolabel.errors import DatasetError
from autolabel.labels import unknown_label_ids


class ImageReadError(DatasetError):
    """An image or label file is unreadable, truncated or empty."""


MAX_IMAGE_PIXELS = 1 << 27
"""Largest image decoded (134M pixels, 64x a Cityscapes frame); a header claiming more is refused before any
memory is taken. Raise it with the AUTOLABEL_MAX_IMAGE_PIXELS environment variable."""


def max_image_pixels() -> int:
    return int(os.environ.get("AUTOLABEL_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS))


def read_file_bytes(path: Path) -> bytes:
    """The bytes of a regular file; a FIFO, device or directory is refused (reading one could block forever)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageReadError(f"{path}: not a regular file")
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise ImageReadError(f"{path}: file is empty")
    return data


def _read_bytes(path: Path) -> np.ndarray:
    return np.frombuffer(read_file_bytes(path), dtype=np.uint8)


def check_header_size(data: bytes | np.ndarray, name: str, limit: int | None = None) -> None:
    """Refuse an image whose header claims more than `limit` pixels (default `max_image_pixels()`), before
    decoding: a few kB can claim 30000x30000 pixels and take gigabytes to decode."""
    limit = max_image_pixels() if limit is None else limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data))) as img:
                width, height = img.size
    except Image.DecompressionBombError:
        raise ImageReadError(f"{name}: its header claims more pixels than images may have") from None
    except (OSError, SyntaxError, ValueError):
        return  # not readable as a header: the decoder names the problem
    if width * height > limit:
        raise ImageReadError(f"{name}: its header claims {width}x{height} pixels, over the limit of {limit:,} "
                             "(AUTOLABEL_MAX_IMAGE_PIXELS raises it)")


def decode_image(data: bytes | np.ndarray, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to RGB (H, W, 3) uint8."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if buf.size == 0:
        raise ImageReadError(f"{name}: file is empty")
    check_header_size(buf, name)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageReadError(f"{name}: not a readable image (corrupt or truncated)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_shape(path: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header; the file is checked whole (truncation, CRCs) but not decoded."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            img.verify()
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except Image.DecompressionBombError:
        raise ImageReadError(f"{path}: its header claims more pixels than images may have") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for empty, unknown or damaged files
        raise ImageReadError(f"{path}: not a readable image (corrupt or truncated: {exc})") from exc
    return height, width


def read_image(path: Path) -> np.ndarray:
    """Read an image file as RGB (H, W, 3) uint8."""
    return decode_image(_read_bytes(path), str(path))


def read_label(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a single-channel Cityscapes label-id PNG as (H, W) uint8; check it is `shape` when given and that it
    holds only ids of the schema."""
    data = _read_bytes(path)
    check_header_size(data, str(path))
    label = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if label is None or label.size == 0:
        raise ImageReadError(f"{path}: not a readable label map (corrupt or truncated)")
    if label.ndim != 2:
        raise ImageReadError(f"{path}: label map must have one channel, found shape {label.shape}")
    if label.dtype != np.uint8:
        raise ImageReadError(f"{path}: label map must be 8-bit, found {label.dtype} (a {label.dtype.itemsize * 8}-bit "
                             "PNG); its values would wrap")
    if shape is not None and label.shape != tuple(shape):
        raise DatasetError(
            f"{path}: label is {label.shape[1]}x{label.shape[0]} but its image is {shape[1]}x{shape[0]}"
        )
    unknown = unknown_label_ids(label)
    if unknown:
        shown = ", ".join(map(str, unknown[:8])) + (", ..." if len(unknown) > 8 else "")
        raise ImageReadError(f"{path}: holds values the Cityscapes label schema does not know ({shown}); label-id "
                             "PNGs hold ids 0-33 (255: license plate), not train ids or colours")
    return label


def encode_png(array: np.ndarray, level: int = 9) -> bytes:
    """Encode (H, W) uint8 or RGB (H, W, 3) uint8 as PNG bytes."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: Path, array: np.ndarray) -> None:
    """Write (H, W) uint8 or RGB (H, W, 3) uint8 as a PNG file, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(array))
