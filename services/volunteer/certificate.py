"""A volunteer's service-hours certificate as a one-page PDF a station can print.

Written by hand (no PDF library): the text uses the standard Adobe CJK font STSong-Light with
the UniGB-UCS2-H encoding, which every PDF reader provides, so nothing is embedded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

MAX_ROWS = 28


@dataclass(frozen=True)
class ServiceRow:
    day: date
    title: str
    hours: float


def _text(s: str) -> str:
    """A PDF hex string in UCS-2 big-endian (characters outside the BMP become '?')."""
    return "<" + "".join(f"{ord(c) if ord(c) < 0x10000 else 0x3F:04X}" for c in s) + ">"


def _line(x: float, y: float, size: int, s: str) -> str:
    return f"BT /F1 {size} Tf {x:.0f} {y:.0f} Td {_text(s)} Tj ET"


def certificate_pdf(
    *, name: str, site_name: str, issued_on: date, total_hours: float, rows: list[ServiceRow], serial: str
) -> bytes:
    """The certificate: who, where registered, total hours, the activities served, date issued."""
    ops = [
        _line(200, 770, 24, "志愿服务时长证明"),
        _line(72, 720, 13, f"兹证明 {name} 同志系 {site_name} 注册志愿者，"),
        _line(72, 700, 13, f"累计参加志愿服务活动 {len(rows)} 次，服务时长 {total_hours:g} 小时。明细如下："),
        _line(72, 670, 11, "日期"),
        _line(170, 670, 11, "活动"),
        _line(470, 670, 11, "时长（小时）"),
        "0.5 w 72 662 m 523 662 l S",
    ]
    y = 645.0
    for r in rows[:MAX_ROWS]:
        ops.append(_line(72, y, 11, r.day.isoformat()))
        ops.append(_line(170, y, 11, r.title[:24]))
        ops.append(_line(490, y, 11, f"{r.hours:g}"))
        y -= 18
    if len(rows) > MAX_ROWS:
        ops.append(_line(170, y, 11, f"……另有 {len(rows) - MAX_ROWS} 次活动"))
        y -= 18
    ops.append(_line(330, min(y - 30, 140), 13, site_name))
    ops.append(_line(330, min(y - 50, 120), 13, f"{issued_on.year}年{issued_on.month}月{issued_on.day}日"))
    ops.append(_line(72, 60, 9, f"证明编号 {serial}"))
    content = "\n".join(ops).encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >>"
        b" /Contents 4 0 R >>",
        b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H /DescendantFonts [6 0 R] >>",
        b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light"
        b" /CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 2 >> /FontDescriptor 7 0 R >>",
        b"<< /Type /FontDescriptor /FontName /STSong-Light /Flags 6 /FontBBox [-25 -254 1000 880]"
        b" /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 880 /StemV 93 >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
