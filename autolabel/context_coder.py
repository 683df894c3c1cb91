"""A lossless coder for label maps: each pixel predicted from its decoded neighbours, arithmetic-coded.

Label maps are flat regions and the boundaries between them, so nearly every pixel is the label of its
neighbours, and which neighbour it copies depends on the shape of the boundary. The coder visits the pixels in
raster order, with the neighbours already decoded:

        NN
    NW  N  NE
    W   x

- Flat context (W = N = NW = NE = v): the stretch of pixels to the right over which the row above stays v is
  one binary decision, "all of it is v" (context: log2 of its length). Otherwise the offset of the first pixel
  that is not v follows (its bits, most significant first), then that pixel's label.
- Any other context: the distinct labels among W, N, NE, NW, in that order, are the candidates; one binary
  decision per candidate, "x is this one", until one is (context: which of W, N, NW, NE, NN are equal, and the
  candidate's place). A label that is none of them is coded as 8 binary decisions (a bit tree).

The decisions go to an adaptive binary range coder, the one LZMA uses (11-bit probabilities, here adapting by
1/16 of the error per decision). Decoding mirrors encoding decision by decision. Pixels outside the map count as:
two rows above the first of label 0, a column left of each row equal to the first pixel of the row above it, a
column right of each row equal to its last pixel.

A coded map is: format byte 1, height and width as LEB128 varints, then the range coder's bytes (the first of
them always 0). On the maps of benchmarks/storage.py it takes 0.2-0.3x the bytes of PNG, about 0.6x of WebP
lossless with packed rows, and codes and decodes 100-250 maps of 1024x2048 per second on one core.

The loops run compiled by numba (cached on disk after the first call; see `compiled`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

FORMAT = 1
PROB_BITS = 11
PROB_ONE = 1 << PROB_BITS
ADAPT_SHIFT = 4
"""A probability moves 1/16 of the way to each decision: faster than LZMA's 1/32, as label maps hold few
decisions (measured 3-5% fewer bytes)."""
RANGE_TOP = 1 << 24

# Where each decision's probability lives in the model array
RUN = 0  # 32: the whole flat stretch keeps its label, by log2 of the stretch's length
OFFSET = RUN + 32  # 32: the offset's bits, by bit position
CANDIDATE = OFFSET + 32  # 256 patterns x 4 candidates
LABEL = CANDIDATE + 256 * 4  # 256: the bit tree of a label outside the candidates
MODEL_SIZE = LABEL + 256


MAX_SIDE = 1 << 20
MAX_PIXELS = 1 << 31
"""The largest map a header may name: a corrupt header is refused before anything is allocated for it."""


class CorruptMapError(ValueError):
    """Bytes that are not a map coded by this coder (truncated, altered, or another format)."""


def compiled(inline: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """numba's compiled version of a function, cached on disk (next to this file, else in the user's cache
    folder); where numba can write neither, compiled in each process instead of failing at import."""
    options: dict[str, Any] = {"nogil": True, "inline": "always" if inline else "never"}

    def wrap(fn: Callable[..., Any]) -> Any:
        try:
            return njit(cache=True, **options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(cache=False, **options)(fn)

    return wrap


@compiled(inline=True)
def _shift_low(state: np.ndarray, out: np.ndarray) -> None:
    """Move the top byte of the encoder's `low` to `out`, resolving a carry into the bytes held back."""
    low = state[0]
    if low < 0xFF000000 or low >= (1 << 32):
        carry = low >> 32
        byte = state[2]
        while True:
            if state[4] < out.shape[0]:
                out[state[4]] = (byte + carry) & 0xFF
            state[4] += 1
            byte = 0xFF
            state[3] -= 1
            if state[3] == 0:
                break
        state[2] = (low >> 24) & 0xFF
    state[3] += 1
    state[0] = (low & 0x00FFFFFF) << 8


@compiled(inline=True)
def _encode_bit(state: np.ndarray, out: np.ndarray, model: np.ndarray, k: int, bit: int) -> None:
    p = model[k]
    bound = (state[1] >> PROB_BITS) * p
    if bit == 0:
        state[1] = bound
        model[k] = p + ((PROB_ONE - p) >> ADAPT_SHIFT)
    else:
        state[0] += bound
        state[1] -= bound
        model[k] = p - (p >> ADAPT_SHIFT)
    while state[1] < RANGE_TOP:
        state[1] <<= 8
        _shift_low(state, out)


@compiled(inline=True)
def _decode_bit(state: np.ndarray, data: np.ndarray, model: np.ndarray, k: int) -> int:
    p = model[k]
    bound = (state[1] >> PROB_BITS) * p
    if state[0] < bound:
        state[1] = bound
        model[k] = p + ((PROB_ONE - p) >> ADAPT_SHIFT)
        bit = 0
    else:
        state[0] -= bound
        state[1] -= bound
        model[k] = p - (p >> ADAPT_SHIFT)
        bit = 1
    while state[1] < RANGE_TOP:
        byte = data[state[2]] if state[2] < data.shape[0] else 0
        state[1] = (state[1] << 8) & 0xFFFFFFFF
        state[0] = ((state[0] << 8) | byte) & 0xFFFFFFFF
        state[2] += 1
    return bit


@compiled(inline=True)
def _pattern(w: int, n: int, nw: int, ne: int, nn: int) -> int:
    """Which of the neighbours are equal: 0..255, the context of the candidate decisions."""
    return (int(w == n) | int(w == nw) << 1 | int(w == ne) << 2 | int(n == nw) << 3 | int(n == ne) << 4
            | int(nw == ne) << 5 | int(nn == n) << 6)


@compiled(inline=True)
def _candidates(cand: np.ndarray, w: int, n: int, ne: int, nw: int) -> int:
    """The distinct labels of W, N, NE, NW in that order into `cand`; their count."""
    cand[0] = w
    count = 1
    for v in (n, ne, nw):
        new = True
        for t in range(count):
            if cand[t] == v:
                new = False
        if new:
            cand[count] = v
            count += 1
    return count


@compiled(inline=True)
def _run_end(row: np.ndarray, words: np.ndarray, start: int, limit: int, value: int) -> int:
    """The first j in [start, limit) with row[j] != value, else limit; `words` is `row` as uint64, which
    compares eight pixels at a time (10x faster than one by one on long runs)."""
    j = start
    while j < limit and (j & 7):
        if row[j] != value:
            return j
        j += 1
    eight = np.uint64(value) * np.uint64(0x0101010101010101)
    while j + 8 <= limit and words[j >> 3] == eight:
        j += 8
    while j < limit and row[j] == value:
        j += 1
    return j


def _padded_width(width: int) -> int:
    """Row length of the padded map: the map, a column either side, rounded up to whole uint64 words."""
    return (width + 2 + 7) // 8 * 8


@compiled(inline=True)
def _log2(length: int) -> int:
    lg = 0
    while (1 << (lg + 1)) <= length:
        lg += 1
    return lg


@compiled()
def _encode(labels: np.ndarray, out: np.ndarray, padded_width: int) -> int:
    """Code the (H, W) uint8 map into `out`; the number of bytes it takes (more than out holds: code again)."""
    height, width = labels.shape
    padded = np.zeros((height + 2, padded_width), np.uint8)  # two virtual rows above, a column either side
    padded[2:, 1:width + 1] = labels
    model = np.full(MODEL_SIZE, PROB_ONE // 2, np.int64)
    state = np.zeros(5, np.int64)  # low, range, held byte, held count, bytes out
    state[1] = 0xFFFFFFFF
    state[3] = 1
    cand = np.zeros(4, np.int64)
    for i in range(2, height + 2):
        padded[i, 0] = padded[i - 1, 1]
        padded[i - 1, width + 1] = padded[i - 1, width]
        row, above = padded[i], padded[i - 1]
        row_words, above_words = row.view(np.uint64), above.view(np.uint64)
        c = 1
        while c <= width:
            w, n, nw, ne = row[c - 1], above[c], above[c - 1], above[c + 1]
            x = row[c]
            if w == n and w == nw and w == ne:
                end = _run_end(above, above_words, c + 2, width + 2, w) - 1  # the stretch is [c, end)
                k = _run_end(row, row_words, c, end, w) - c
                lg = _log2(end - c)
                if c + k == end:
                    _encode_bit(state, out, model, RUN + lg, 0)
                    c = end
                    continue
                _encode_bit(state, out, model, RUN + lg, 1)
                for b in range(lg, -1, -1):
                    _encode_bit(state, out, model, OFFSET + b, (k >> b) & 1)
                c += k
                x = row[c]
                found = False
            else:
                base = CANDIDATE + _pattern(w, n, nw, ne, padded[i - 2, c]) * 4
                found = False
                for t in range(_candidates(cand, w, n, ne, nw)):
                    hit = x == cand[t]
                    _encode_bit(state, out, model, base + t, 1 if hit else 0)
                    if hit:
                        found = True
                        break
            if not found:
                node = 1
                for b in range(7, -1, -1):
                    bit = (x >> b) & 1
                    _encode_bit(state, out, model, LABEL + node, bit)
                    node = node * 2 + bit
            c += 1
    for _ in range(5):
        _shift_low(state, out)
    return state[4]


@compiled()
def _decode(data: np.ndarray, height: int, width: int, padded_width: int) -> tuple[np.ndarray, int]:
    """The padded map (H + 2, padded_width) coded in `data` (the map is [2:, 1:W + 1]), and how many bytes of
    `data` decoding it took."""
    padded = np.empty((height + 2, padded_width), np.uint8)  # every pixel read is written first
    padded[:2] = 0
    model = np.full(MODEL_SIZE, PROB_ONE // 2, np.int64)
    state = np.zeros(3, np.int64)  # code, range, bytes in
    state[1] = 0xFFFFFFFF
    for _ in range(5):
        byte = data[state[2]] if state[2] < data.shape[0] else 0
        state[0] = ((state[0] << 8) | byte) & 0xFFFFFFFF
        state[2] += 1
    cand = np.zeros(4, np.int64)
    for i in range(2, height + 2):
        if state[2] > data.shape[0]:  # read past the end: truncated, or a header naming a larger map
            break
        padded[i, 0] = padded[i - 1, 1]
        padded[i - 1, width + 1] = padded[i - 1, width]
        row, above = padded[i], padded[i - 1]
        above_words = above.view(np.uint64)
        c = 1
        while c <= width:
            w, n, nw, ne = row[c - 1], above[c], above[c - 1], above[c + 1]
            x = -1
            if w == n and w == nw and w == ne:
                end = _run_end(above, above_words, c + 2, width + 2, w) - 1
                lg = _log2(end - c)
                if _decode_bit(state, data, model, RUN + lg) == 0:
                    row[c:end] = w
                    c = end
                    continue
                k = 0
                for b in range(lg, -1, -1):
                    k = (k << 1) | _decode_bit(state, data, model, OFFSET + b)
                k = min(k, end - 1 - c)  # only corrupt bytes give an offset past the stretch
                row[c:c + k] = w
                c += k
            else:
                base = CANDIDATE + _pattern(w, n, nw, ne, padded[i - 2, c]) * 4
                for t in range(_candidates(cand, w, n, ne, nw)):
                    if _decode_bit(state, data, model, base + t):
                        x = cand[t]
                        break
            if x < 0:
                node = 1
                for _ in range(8):
                    node = node * 2 + _decode_bit(state, data, model, LABEL + node)
                x = node - 256
            row[c] = x
            c += 1
    return padded, state[2]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 28:
            raise CorruptMapError("map header is truncated")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def encode_map(labels: np.ndarray) -> bytes:
    """The (H, W) uint8 map as this coder's bytes."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) uint8 map, got {labels.dtype} of shape {labels.shape}")
    if max(labels.shape) > MAX_SIDE or labels.size > MAX_PIXELS:
        raise ValueError(f"a map of {labels.shape[0]}x{labels.shape[1]} is larger than the coder takes "
                         f"({MAX_SIDE} a side, {MAX_PIXELS} pixels)")
    if not labels.flags.writeable or not labels.flags.c_contiguous:
        labels = np.array(labels, order="C")  # read-only arrays would compile a second version of the coder
    out = np.empty(labels.size + 64, np.uint8)  # 8 bits a pixel: pages never written cost nothing
    padded_width = _padded_width(labels.shape[1])
    size = _encode(labels, out, padded_width)
    if size > out.size:  # only noise of many labels costs more: code again into enough room
        out = np.empty(size, np.uint8)
        _encode(labels, out, padded_width)
    header = bytes([FORMAT]) + _varint(labels.shape[0]) + _varint(labels.shape[1])
    return header + out[:size].tobytes()


def map_shape(data: bytes) -> tuple[int, int]:
    """(H, W) of a coded map, from its header (nothing decoded)."""
    return _header(bytes(data))[0]


def _header(data: bytes) -> tuple[tuple[int, int], int]:
    if not data or data[0] != FORMAT:
        raise CorruptMapError(f"not a coded map (format byte {data[0] if data else None}, expected {FORMAT})")
    height, at = _read_varint(data, 1)
    width, at = _read_varint(data, at)
    if max(height, width) > MAX_SIDE or height * width > MAX_PIXELS:
        raise CorruptMapError(f"map header names a {height}x{width} map, larger than any this coder writes")
    return (height, width), at


def decode_map(data: bytes) -> np.ndarray:
    """The (H, W) uint8 map of encode_map's bytes; CorruptMapError where they cannot be one."""
    data = bytes(data)
    (height, width), at = _header(data)
    body = np.frombuffer(data, np.uint8, offset=at)
    if body.size < 5 or body[0] != 0:
        raise CorruptMapError("coded map is truncated or altered")
    padded, used = _decode(body, height, width, _padded_width(width))
    if used != body.size:  # the decoder reads exactly the bytes the encoder wrote
        raise CorruptMapError(f"coded map is truncated or altered: decoding it took {used} bytes, it has "
                              f"{body.size}")
    return np.ascontiguousarray(padded[2:, 1:width + 1])  # numpy copies row by row: 10x numba's copy
