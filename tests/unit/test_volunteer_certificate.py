"""The hours certificate is a well-formed one-page PDF carrying the volunteer's hours."""

from __future__ import annotations

import re
from datetime import date

from services.volunteer.certificate import MAX_ROWS, ServiceRow, certificate_pdf


def _hex(s: str) -> bytes:
    return "".join(f"{ord(c):04X}" for c in s).encode()


def test_certificate_is_a_pdf_with_a_true_xref_and_the_hours():
    rows = [ServiceRow(date(2026, 11, d), f"文明交通劝导第{d}次", 2.5) for d in range(1, 4)]
    pdf = certificate_pdf(
        name="林小明",
        site_name="文泉社区新时代文明实践站",
        issued_on=date(2026, 11, 25),
        total_hours=7.5,
        rows=rows,
        serial="abc",
    )
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    start = int(re.search(rb"startxref\n(\d+)", pdf).group(1))  # type: ignore[union-attr]
    assert pdf[start:].startswith(b"xref")
    offsets = [int(m) for m in re.findall(rb"(\d{10}) 00000 n", pdf)]
    assert len(offsets) == 7
    for i, off in enumerate(offsets, start=1):
        assert pdf[off:].startswith(f"{i} 0 obj".encode())
    length = int(re.search(rb"/Length (\d+)", pdf).group(1))  # type: ignore[union-attr]
    body = pdf.split(b"stream\n", 1)[1]
    assert body[length:].startswith(b"\nendstream")
    assert _hex("林小明") in pdf and _hex("7.5") in pdf and _hex("文明交通劝导第3次") in pdf


def test_long_service_records_are_summarised_on_one_page():
    rows = [ServiceRow(date(2026, 1, 1), "环境卫生整治", 1) for _ in range(MAX_ROWS + 5)]
    pdf = certificate_pdf(
        name="陈*", site_name="站", issued_on=date(2026, 11, 25), total_hours=33, rows=rows, serial="s"
    )
    assert _hex("另有 5 次活动") in pdf
    assert pdf.count(_hex("环境卫生整治")) == MAX_ROWS
