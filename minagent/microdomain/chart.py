"""A bar chart of system accuracies, written as a PNG with nothing but the standard library.

Why: the results table is easier to read as a picture, but the design card allows torch, numpy,
sentencepiece, safetensors and tqdm only, so there is no matplotlib or PIL to draw with.
How: a raster canvas (a bytearray of RGB pixels with rectangle filling), a 5x7 bitmap font for printable
ASCII drawn at scale 2, and a PNG encoder that writes the IHDR, IDAT (zlib, filter 0 on every row) and IEND
chunks with their CRCs. `read_png` decodes exactly that subset back, for the tests.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

# 5x7 glyphs: seven rows of two hex digits each, bit 0x10 is the leftmost column.
_FONT = {
    " ": "00000000000000", "!": "04040404040004", '"': "0A0A0000000000", "#": "0A0A1F0A1F0A0A",
    "$": "040F140E051E04", "%": "18190204081303", "&": "0C12140815120D",
    "'": "04040800000000", "(": "02040808080402", ")": "08040202020408", "*": "0004150E150400",
    "+": "0004041F040400", ",": "000000000C0408", "-": "0000001F000000", ".": "00000000000C0C",
    "/": "00010204081000", "0": "0E11131519110E", "1": "040C040404040E",
    "2": "0E11010204081F", "3": "1F02040201110E", "4": "02060A121F0202", "5": "1F101E0101110E",
    "6": "0608101E11110E", "7": "1F010204080808", "8": "0E11110E11110E", "9": "0E11110F01020C",
    ":": "000C0C000C0C00", ";": "000C0C000C0408", "<": "02040810080402", "=": "00001F001F0000",
    ">": "08040201020408", "?": "0E110102040004", "@": "0E11010D15150E", "A": "0E1111111F1111",
    "B": "1E11111E11111E", "C": "0E11101010110E", "D": "1C12111111121C",
    "E": "1F10101E10101F", "F": "1F10101E101010", "G": "0E11101711110F",
    "H": "1111111F111111", "I": "0E04040404040E", "J": "0702020202120C", "K": "11121418141211",
    "L": "1010101010101F", "M": "111B1515111111", "N": "11111915131111", "O": "0E11111111110E",
    "P": "1E11111E101010", "Q": "0E11111115120D", "R": "1E11111E141211", "S": "0F10100E01011E",
    "T": "1F040404040404", "U": "1111111111110E", "V": "11111111110A04",
    "W": "1111111515150A", "X": "11110A040A1111", "Y": "1111110A040404", "Z": "1F01020408101F",
    "[": "0E08080808080E", "\\": "00100804020100", "]": "0E02020202020E", "^": "040A1100000000",
    "_": "0000000000001F", "`": "08040200000000", "a": "00000E010F110F", "b": "1010161911111E",
    "c": "00000E1010110E", "d": "01010D1311110F", "e": "00000E111F100E", "f": "0609081C080808",
    "g": "00000F110F010E", "h": "10101619111111", "i": "04000C0404040E", "j": "0200060202120C",
    "k": "10101214181412", "l": "0C04040404040E", "m": "00001A15151111", "n": "00001619111111",
    "o": "00000E1111110E", "p": "00001E111E1010", "q": "00000D130F0101", "r": "00001619101010",
    "s": "00000E100E011E", "t": "08081C08080906", "u": "0000111111130D", "v": "00001111110A04",
    "w": "0000111115150A", "x": "0000110A040A11", "y": "000011110F010E", "z": "00001F0204081F",
    "{": "02040408040402", "|": "04040404040404", "}": "08040402040408", "~": "00000815020000",
}
_BOX = "1F11111111111F"   # drawn for any character the font lacks

SCALE = 2
CHAR_W, CHAR_H = 6 * SCALE, 7 * SCALE       # advance (5 columns + 1 gap) and glyph height, in pixels
LINE_H = CHAR_H + 4
MAX_LABEL_LINES = 4

WHITE, TEXT, GRID = (255, 255, 255), (50, 50, 50), (225, 225, 225)
BAR_COLOURS = [(66, 110, 180), (221, 132, 52), (85, 168, 104), (196, 78, 82), (129, 114, 179), (147, 120, 96),
               (38, 150, 160)]


class Canvas:
    """An RGB raster, row-major, top-left origin; drawing outside it is clipped."""

    def __init__(self, width: int, height: int, colour=WHITE):
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(colour) * (width * height))

    def fill(self, x0: int, y0: int, x1: int, y1: int, colour) -> None:
        """Paint the rectangle [x0, x1) x [y0, y1)."""
        x0, x1 = max(x0, 0), min(x1, self.width)
        span = bytes(colour) * max(x1 - x0, 0)
        for y in range(max(y0, 0), min(y1, self.height)):
            start = (y * self.width + x0) * 3
            self.pixels[start:start + len(span)] = span

    def text(self, x: int, y: int, s: str, colour=TEXT) -> None:
        """Draw `s` with its top-left corner at (x, y)."""
        for i, ch in enumerate(s):
            rows = bytes.fromhex(_FONT.get(ch, _BOX))
            for r, bits in enumerate(rows):
                for c in range(5):
                    if bits & (0x10 >> c):
                        px, py = x + i * CHAR_W + c * SCALE, y + r * SCALE
                        self.fill(px, py, px + SCALE, py + SCALE, colour)

    def rows(self) -> list[bytes]:
        w3 = self.width * 3
        return [bytes(self.pixels[y * w3:(y + 1) * w3]) for y in range(self.height)]


def text_width(s: str) -> int:
    return len(s) * CHAR_W - SCALE if s else 0


def wrap(label: str, max_chars: int) -> list[str]:
    """Greedy word wrap; a word too long for a line breaks after its hyphens, then anywhere."""
    max_chars = max(max_chars, 1)
    pieces = []
    for word in label.split():
        while len(word) > max_chars:
            cut = word.rfind("-", 0, max_chars) + 1 or max_chars
            pieces.append(word[:cut])
            word = word[cut:]
        if word:
            pieces.append(word)
    lines: list[str] = []
    for piece in pieces:
        if lines and len(lines[-1]) + 1 + len(piece) <= max_chars:
            lines[-1] += " " + piece
        else:
            lines.append(piece)
    if len(lines) > MAX_LABEL_LINES:
        lines = lines[:MAX_LABEL_LINES]
        lines[-1] = lines[-1][:max(max_chars - 2, 0)] + ".."
    return lines


@dataclass(frozen=True)
class Layout:
    """Where things go: the plot area [left, right) x [top, bottom] and each bar's [x0, x1) columns."""
    left: int
    top: int
    right: int
    bottom: int
    bars: list[tuple[int, int]]
    label_lines: list[list[str]]

    def y_of(self, value: float, ymax: float) -> int:
        """The first pixel row of a bar of `value` (the bar fills rows [y_of, bottom))."""
        value = min(max(value, 0.0), ymax)
        return self.bottom - round(value / ymax * (self.bottom - self.top))


def tick_values(ymax: float) -> list[float]:
    return [ymax * i / 5 for i in range(6)]


def chart_layout(labels: list[str], ymax: float = 100.0, width: int = 900, height: int = 480) -> Layout:
    top = 10 + CHAR_H + 12 + LINE_H + 2 * LINE_H            # title, y label, room for a value above a full bar
    left = 8 + max(text_width(f"{t:g}") for t in tick_values(ymax)) + 10
    right = width - 16
    slot = (right - left) / max(len(labels), 1)
    label_lines = [wrap(label, int(slot - 6) // CHAR_W) for label in labels]
    n_lines = max((len(lines) for lines in label_lines), default=1)
    bottom = height - 10 - n_lines * LINE_H - 4
    if bottom - top < 20:
        raise ValueError(f"a {width}x{height} chart has no room for its plot area")
    bars = [(round(left + (i + 0.2) * slot), round(left + (i + 0.8) * slot)) for i in range(len(labels))]
    return Layout(left, top, right, bottom, bars, label_lines)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png(width: int, height: int, rows: list[bytes]) -> bytes:
    """8-bit RGB, no interlace, filter type 0 (None) on every row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def read_png(path) -> tuple[int, int, list[bytes]]:
    """Decode a PNG of the kind encode_png writes; anything else raises ValueError naming the file."""
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    pos, header, idat = len(PNG_SIGNATURE), None, b""
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"{path}: bad CRC in chunk {kind!r}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or header[2:] != (8, 2, 0, 0, 0):
        raise ValueError(f"{path}: only 8-bit RGB, non-interlaced PNGs are supported (IHDR {header})")
    width, height = header[:2]
    raw, stride = zlib.decompress(idat), 1 + 3 * width
    if len(raw) != stride * height:
        raise ValueError(f"{path}: image data is {len(raw)} bytes, expected {stride * height}")
    rows = []
    for y in range(height):
        if raw[y * stride] != 0:
            raise ValueError(f"{path}: row {y} uses filter type {raw[y * stride]}, only 0 is supported")
        rows.append(raw[y * stride + 1:(y + 1) * stride])
    return width, height, rows


def _draw_axes(canvas: Canvas, lay: Layout, ymax: float) -> None:
    for t in tick_values(ymax):
        y = lay.y_of(t, ymax)
        canvas.fill(lay.left + 1, y, lay.right, y + 1, GRID)
        canvas.fill(lay.left - 5, y, lay.left, y + 1, TEXT)
        label = f"{t:g}"
        canvas.text(lay.left - 8 - text_width(label), y - CHAR_H // 2, label)
    canvas.fill(lay.left, lay.top, lay.left + 1, lay.bottom + 1, TEXT)


def bar_chart_png(labels: list[str], values: list[float], path, title: str = "", ylabel: str = "accuracy (%)",
                  ymax: float = 100.0, width: int = 900, height: int = 480) -> Path:
    """One vertical bar per label, its value above it and its (wrapped) label below it; None draws "-"."""
    if len(labels) != len(values):
        raise ValueError(f"bar_chart_png: {len(labels)} labels but {len(values)} values; they must pair up")
    if ymax <= 0:
        raise ValueError(f"bar_chart_png: ymax must be positive, got {ymax}")
    lay = chart_layout(labels, ymax, width, height)
    canvas = Canvas(width, height)
    canvas.text((width - text_width(title)) // 2, 10, title)
    canvas.text(8, 10 + CHAR_H + 12, ylabel)
    _draw_axes(canvas, lay, ymax)
    for i, (value, (x0, x1), lines) in enumerate(zip(values, lay.bars, lay.label_lines)):
        mid = (x0 + x1) // 2
        if value is None:
            y, shown = lay.bottom, "-"
        else:
            y, shown = lay.y_of(value, ymax), f"{value:.1f}"
            canvas.fill(x0, y, x1, lay.bottom, BAR_COLOURS[i % len(BAR_COLOURS)])
        canvas.text(mid - text_width(shown) // 2, y - 4 - CHAR_H, shown)
        for k, line in enumerate(lines):
            canvas.text(mid - text_width(line) // 2, lay.bottom + 10 + k * LINE_H, line)
    canvas.fill(lay.left, lay.bottom, lay.right, lay.bottom + 1, TEXT)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_png(width, height, canvas.rows()))
    os.replace(tmp, path)
    return path
