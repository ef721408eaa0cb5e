"""The stdlib PNG bar chart: the file is a valid PNG (checked here independently of chart.read_png), and the
bars are where the plot-area geometry says they are."""
import struct
import zlib

import pytest

from minagent.microdomain import chart

LABELS = ["base closed-book", "base + RAG", "CPT only", "CoT-distilled", "agent-distilled",
          "agent-distilled + SAG", "agent-distilled + extractor"]
VALUES = [25.0, 40.5, 27.3, 30.1, 62.0, 64.2, 58.8]


def chunks(data: bytes):
    """(kind, body, stored crc) for every chunk, parsed by hand."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        out.append((kind, body, crc))
        pos += 12 + length
    assert pos == len(data)
    return out


def decode(path):
    """Independent decoder for 8-bit RGB, filter-0 PNGs: (width, height, rows of (r, g, b) tuples)."""
    parts = chunks(path.read_bytes())
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", parts[0][1])
    assert (depth, ctype, interlace) == (8, 2, 0)
    raw = zlib.decompress(b"".join(body for kind, body, _ in parts if kind == b"IDAT"))
    stride = 1 + 3 * width
    assert len(raw) == stride * height
    rows = []
    for y in range(height):
        assert raw[y * stride] == 0
        line = raw[y * stride + 1:(y + 1) * stride]
        rows.append([tuple(line[3 * x:3 * x + 3]) for x in range(width)])
    return width, height, rows


def render(tmp_path, labels, values, **kw):
    path = chart.bar_chart_png(labels, values, tmp_path / "sub" / "dir" / "chart.png", title="Exam accuracy", **kw)
    return path, decode(path)


def test_png_structure_crcs_and_size(tmp_path):
    path, _ = render(tmp_path, LABELS, VALUES, width=640, height=400)
    assert path == tmp_path / "sub" / "dir" / "chart.png" and path.is_file()
    assert not path.with_name("chart.png.tmp").exists()
    parts = chunks(path.read_bytes())
    assert [k for k, _, _ in parts][0] == b"IHDR" and parts[-1][0] == b"IEND"
    assert b"IDAT" in [k for k, _, _ in parts]
    for kind, body, crc in parts:
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
    width, height = struct.unpack(">II", parts[0][1][:8])
    assert (width, height) == (640, 400)


def test_read_png_matches_independent_decoder(tmp_path):
    path, (width, height, rows) = render(tmp_path, LABELS, VALUES)
    w, h, mine = chart.read_png(path)
    assert (w, h) == (width, height) == (900, 480)
    assert len(mine) == height
    for y in range(height):
        assert bytes(mine[y]) == b"".join(bytes(p) for p in rows[y])


def test_bar_tops_are_where_the_geometry_says(tmp_path):
    _, (_, _, rows) = render(tmp_path, LABELS, VALUES)
    lay = chart.chart_layout(LABELS, 100.0, 900, 480)
    for i, ((x0, x1), v) in enumerate(zip(lay.bars, VALUES)):
        colour = chart.BAR_COLOURS[i % len(chart.BAR_COLOURS)]
        mid = (x0 + x1) // 2
        top = lay.y_of(v, 100.0)
        assert rows[top + 1][mid] == colour           # just below the bar top
        assert rows[lay.bottom - 1][mid] == colour    # at the baseline
        assert rows[top - 2][mid] != colour           # just above (the value label sits higher still)
        assert rows[top - 2][mid] == chart.WHITE or rows[top - 2][mid] == chart.GRID


def bar_top(rows, x, bottom, colour):
    y = bottom - 1
    while rows[y][x] == colour:
        y -= 1
    return y + 1


def test_bar_height_is_linear_in_value(tmp_path):
    values = [0.0, 10.0, 33.3, 50.0, 77.7, 100.0]
    labels = [f"v{i}" for i in range(len(values))]
    _, (_, _, rows) = render(tmp_path, labels, values)
    lay = chart.chart_layout(labels, 100.0, 900, 480)
    tops = []
    for i, ((x0, x1), v) in enumerate(zip(lay.bars, values)):
        found = bar_top(rows, (x0 + x1) // 2, lay.bottom, chart.BAR_COLOURS[i % len(chart.BAR_COLOURS)])
        expected = lay.bottom - v / 100.0 * (lay.bottom - lay.top)
        assert abs(found - expected) <= 2, (v, found, expected)
        tops.append(found)
    assert tops == sorted(tops, reverse=True) and len(set(tops)) == len(tops)   # taller value, higher top


def test_bars_are_ordered_left_to_right(tmp_path):
    values = [60.0, 60.0, 60.0, 60.0]
    labels = ["a", "b", "c", "d"]
    _, (width, _, rows) = render(tmp_path, labels, values)
    lay = chart.chart_layout(labels, 100.0, 900, 480)
    assert all(a[1] <= b[0] for a, b in zip(lay.bars, lay.bars[1:]))
    seen = []
    for x in range(width):
        p = rows[lay.bottom - 5][x]
        if p in chart.BAR_COLOURS and (not seen or seen[-1] != p):
            seen.append(p)
    assert seen == chart.BAR_COLOURS[:4]


def test_zero_none_and_clipped_values(tmp_path):
    labels = ["zero", "none", "over", "under"]
    _, (_, _, rows) = render(tmp_path, labels, [0.0, None, 150.0, -5.0])
    lay = chart.chart_layout(labels, 100.0, 900, 480)
    for i in (0, 1, 3):                                   # no bar pixels anywhere in those columns
        x0, x1 = lay.bars[i]
        colour = chart.BAR_COLOURS[i]
        assert not any(rows[y][x] == colour for y in range(len(rows)) for x in range(x0, x1))
    x0, x1 = lay.bars[1]                                  # None draws a "-" just above the baseline
    band = range(lay.bottom - 4 - chart.CHAR_H, lay.bottom - 4)
    assert any(rows[y][x] == chart.TEXT for y in band for x in range(x0, x1))
    x0, x1 = lay.bars[2]                                  # over ymax: clipped to the plot top
    assert bar_top(rows, (x0 + x1) // 2, lay.bottom, chart.BAR_COLOURS[2]) == lay.top


def test_labels_wrap_inside_their_slots_and_the_image():
    lay = chart.chart_layout(LABELS, 100.0, 900, 480)
    slot = (lay.right - lay.left) / len(LABELS)
    for (x0, x1), lines in zip(lay.bars, lay.label_lines):
        assert 1 <= len(lines) <= chart.MAX_LABEL_LINES
        mid = (x0 + x1) // 2
        for line in lines:
            assert chart.text_width(line) <= slot - 6, line
            assert mid - chart.text_width(line) // 2 >= 0 and mid + chart.text_width(line) // 2 < 900
    assert " ".join(lay.label_lines[-1]).replace("- ", "-") == LABELS[-1]
    assert lay.bottom + 10 + len(max(lay.label_lines, key=len)) * chart.LINE_H <= 480


def test_font_covers_printable_ascii_and_unknown_is_a_box():
    assert all(chr(c) in chart._FONT for c in range(32, 127))
    canvas = chart.Canvas(20, 20)
    canvas.text(0, 0, "\u00e9")
    rows = canvas.rows()
    ink = {(x, y) for y in range(20) for x in range(20) if rows[y][3 * x:3 * x + 3] != bytes(chart.WHITE)}
    w, h = 5 * chart.SCALE, 7 * chart.SCALE
    assert {(x, 0) for x in range(w)} <= ink and {(0, y) for y in range(h)} <= ink
    assert (w // 2, h // 2) not in ink and max(x for x, _ in ink) == w - 1


def test_pil_agrees_with_read_png(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    path, _ = render(tmp_path, LABELS, VALUES)
    width, height, rows = chart.read_png(path)
    with Image.open(path) as img:
        assert img.size == (width, height) and img.mode == "RGB"
        assert img.tobytes() == b"".join(bytes(r) for r in rows)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="2 labels but 3 values"):
        chart.bar_chart_png(["a", "b"], [1.0, 2.0, 3.0], "/nonexistent/never-written.png")


def test_read_png_rejects_what_it_does_not_decode(tmp_path):
    bad = tmp_path / "rgba.png"
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    body = zlib.compress(b"\x00" + b"\x01\x02\x03\x04")
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
        for k, d in [(b"IHDR", ihdr), (b"IDAT", body), (b"IEND", b"")]))
    with pytest.raises(ValueError, match="rgba.png"):
        chart.read_png(bad)
    text = tmp_path / "not.png"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not.png"):
        chart.read_png(text)
