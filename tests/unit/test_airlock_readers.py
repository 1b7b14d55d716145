"""The airlock's readers: what a file is (by content), its encoding, and the tables, text,
images and members read from CSV, Parquet, Excel, JSON, text, notebooks, HTML, SVG, PNG,
JPEG, archives and encoded runs."""

from __future__ import annotations

import base64
import codecs
import gzip
import io
import json
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sandbox.airlock import FileKind, load_airlock
from sandbox.airlock.archives import Unpacked, gzip_items, tar_items, zip_items
from sandbox.airlock.documents import (
    html_items,
    jpeg_items,
    notebook_items,
    png_items,
    svg_items,
)
from sandbox.airlock.encodings import decode_run, find_blobs, looks_encoded
from sandbox.airlock.files import (
    Source,
    compatible,
    declared_kind,
    decode_text,
    detect_encoding,
    extension,
    sniff,
    zip_kind,
)
from sandbox.airlock.tables import (
    ImageItem,
    Item,
    MemberItem,
    Problem,
    ReadError,
    TableItem,
    TextItem,
    csv_table,
    excel_items,
    json_items,
    json_lines_items,
    parquet_items,
    sniff_delimiter,
    tables_in_text,
)
from sandbox.views.disclosure import load_disclosure
from tests.conftest import REPO_ROOT
from tests.xlsx import write_xlsx

RULES = load_airlock(
    REPO_ROOT / "policies" / "airlock.yaml",
    load_disclosure(REPO_ROOT / "policies" / "disclosure.yaml"),
).rules("L2")
CSV = "district,sex,count\n市南区,男,120\n市南区,女,131\n崂山区,男,98\n"


def source(data: bytes, name: str = "file") -> Source:
    return Source(name, name, data=data)


def rows_of(item: TableItem) -> list[dict[str, Any]]:
    return pa.concat_tables(list(item.batches)).to_pylist() if item.columns else []


def only(items: list[Item], kind: type) -> list[Any]:
    return [item for item in items if isinstance(item, kind)]


# ---------------------------------------------------------------------- what a file is
@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"PAR1\x15\x04", FileKind.PARQUET),
        (b"ARROW1\0\0", FileKind.ARROW),
        (b"PK\x03\x04rest", FileKind.ZIP),
        (b"\x1f\x8b\x08\0", FileKind.GZIP),
        (b"\x89PNG\r\n\x1a\n", FileKind.PNG),
        (b"\xff\xd8\xff\xe0", FileKind.JPEG),
        (b"GIF89a", FileKind.GIF),
        (b"%PDF-1.7", FileKind.PDF),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", FileKind.EXCEL),
        (b"7z\xbc\xaf\x27\x1c", FileKind.OTHER_ARCHIVE),
        (b"\0" * 257 + b"ustar\x0000" + b"\0" * 10, FileKind.TAR),
        (b'{"cells": [], "nbformat": 4}', FileKind.NOTEBOOK),
        (b'[{"a": 1}]', FileKind.JSON),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg">', FileKind.SVG),
        (b"<table><tr><td>1</td></tr></table>", FileKind.HTML),
        (CSV.encode(), FileKind.TEXT),
        (bytes(range(256)) * 4, FileKind.BINARY),
    ],
)
def test_kind_from_content(head: bytes, kind: FileKind) -> None:
    assert sniff(head) is kind


def test_office_documents_are_told_from_archives() -> None:
    assert zip_kind(["[Content_Types].xml", "xl/workbook.xml", "xl/worksheets/sheet1.xml"]) is (
        FileKind.EXCEL
    )
    assert zip_kind(["[Content_Types].xml", "word/document.xml"]) is FileKind.OFFICE
    assert zip_kind(["data/rows.csv"]) is FileKind.ZIP


def test_extensions_and_compatible_kinds() -> None:
    assert extension("results/Table.CSV") == "csv"
    assert extension("bundle.tar.gz") == "gz"
    assert extension(".bashrc") == "" and extension("README") == ""
    assert declared_kind("a.ipynb") is FileKind.NOTEBOOK and declared_kind("a.exe") is None
    assert compatible(FileKind.TEXT, FileKind.JSON)  # a .txt holding JSON is text
    assert not compatible(FileKind.PNG, FileKind.PARQUET)


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (CSV.encode(), "utf-8"),
        (codecs.BOM_UTF8 + CSV.encode(), "utf-8-sig"),
        (CSV.encode("utf-16"), "utf-16"),  # with a byte-order mark
        (CSV.encode("utf-16-le"), "utf-16-le"),
        (CSV.encode("utf-16-be"), "utf-16-be"),
        (CSV.encode("gbk"), "gb18030"),
        (b"", "utf-8"),
        (bytes(range(256)), None),
        (b"\x00\x01\x02\x03" * 100, None),
    ],
)
def test_text_encodings(data: bytes, encoding: str | None) -> None:
    assert detect_encoding(data) == encoding
    decoded = decode_text(data)
    if encoding is None:
        assert decoded is None
    else:
        assert decoded is not None and decoded[0] == (CSV if data else "")


# ---------------------------------------------------------------------- CSV
def test_csv_in_batches_of_text(tmp_path: Path) -> None:
    item = csv_table(source(CSV.encode("gbk")))
    assert item.columns == ["district", "sex", "count"]
    assert rows_of(item)[1] == {"district": "市南区", "sex": "女", "count": "131"}


def test_csv_delimiters_and_quoted_newlines() -> None:
    text = 'a;b;c\n1;"two\nlines";3\n4;5;6\n'
    item = csv_table(source(text.encode()))
    assert rows_of(item) == [
        {"a": "1", "b": "two\nlines", "c": "3"},
        {"a": "4", "b": "5", "c": "6"},
    ]
    tabbed = csv_table(source(b"x\ty\n1\t2\n"), delimiter="\t")
    assert rows_of(tabbed) == [{"x": "1", "y": "2"}]


def test_csv_rows_of_the_wrong_width_are_counted() -> None:
    item = csv_table(source(b"a,b\n1,2\n3,4,5\n6,7\n"))
    assert [row["a"] for row in rows_of(item)] == ["1", "6"]
    assert item.skipped_rows == 1


def test_csv_header_names_are_made_unique() -> None:
    item = csv_table(source(b",a,a\n0,1,2\n1,3,4\n"))
    assert item.columns == ["column 1", "a", "a.1"]


def test_binary_is_not_csv() -> None:
    with pytest.raises(ReadError):
        csv_table(source(bytes(range(256)) * 10))


def test_sniff_delimiter() -> None:
    assert sniff_delimiter(["a|b|c", "1|2|3", "4|5|6"]) == ("|", 3)
    assert sniff_delimiter(["just prose here", "and more"]) == (",", 1)


# ---------------------------------------------------------------------- Parquet, Excel, JSON
def test_parquet_batches_and_metadata() -> None:
    table = pa.table({"x": [1, 2, 3], "y": ["a", "b", "c"]}).replace_schema_metadata(
        {"note": "contact 13812345678"}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    texts, tables = [], []
    for item in parquet_items(source(buffer.getvalue())):  # a table is read before the next
        if isinstance(item, TextItem):
            texts.append(item.text)
        else:
            tables.append((item.rows_hint, rows_of(item)))
    assert len(texts) == 1 and "13812345678" in texts[0]
    assert tables == [(3, table.to_pylist())]


def test_damaged_parquet() -> None:
    with pytest.raises(ReadError):
        list(parquet_items(source(b"PAR1 not really")))


def test_excel_sheets(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "t.xlsx", [["name", "n"], ["a", "1"], ["b", "2"]])
    (item,) = excel_items(Source("t.xlsx", "t.xlsx", path=path))
    assert isinstance(item, TableItem) and item.location == "sheet 'Sheet1'"
    assert rows_of(item) == [{"name": "a", "n": "1"}, {"name": "b", "n": "2"}]


def test_a_file_that_is_not_a_workbook() -> None:
    with pytest.raises(ReadError):
        list(excel_items(source(b"PK\x03\x04 broken")))


@pytest.mark.parametrize(
    "document",
    [
        [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}],  # records
        {"a": [1, 2], "b": ["x", "y"]},  # columns of lists
        {"columns": ["a", "b"], "index": [0, 1], "data": [[1, "x"], [2, "y"]]},  # split
        {"a": {"0": 1, "1": 2}, "b": {"0": "x", "1": "y"}},  # pandas "columns"
        {"r1": {"a": 1, "b": "x"}, "r2": {"a": 2, "b": "y"}},  # pandas "index"
        [["a", "b"], [1, "x"], [2, "y"]],  # a header, then rows
        {"result": {"rows": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}},  # nested
    ],
)
def test_json_tables(document: Any) -> None:
    items = list(json_items(json.dumps(document)))
    (table,) = only(items, TableItem)
    assert sorted(table.columns) == ["a", "b"]
    assert sorted((row["a"], row["b"]) for row in rows_of(table)) == [("1", "x"), ("2", "y")]
    assert "x" in only(items, TextItem)[0].text


def test_json_lines_and_bad_json() -> None:
    (table, _) = json_lines_items('{"a": 1}\n\n{"a": 2}\n')
    assert isinstance(table, TableItem) and [r["a"] for r in rows_of(table)] == ["1", "2"]
    with pytest.raises(ReadError):
        list(json_items("{not json"))
    with pytest.raises(ReadError):
        list(json_lines_items('{"a": 1}\nnope\n'))


# ---------------------------------------------------------------------- tables in text
def test_tables_in_text() -> None:
    text = (
        "Results\n\n"
        "| district | people |\n|---|---:|\n| 市南区 | 212 |\n| 崂山区 | 198 |\n\n"
        "a,b,c\n1,2,3\n4,5,6\n\n"
        "       name  age\n0      王伟   31\n1      李娜   45\n\n"
        "Just a sentence, with a comma.\nAnd another line.\n"
    )
    markdown, delimited, printed = tables_in_text(text, "cell 1")
    assert markdown.location == "cell 1, lines 3-6"
    assert rows_of(markdown) == [
        {"district": "市南区", "people": "212"},
        {"district": "崂山区", "people": "198"},
    ]
    assert rows_of(delimited)[1] == {"a": "4", "b": "5", "c": "6"}
    assert printed.columns == ["column 1", "name", "age"]  # a DataFrame's unnamed index
    assert rows_of(printed)[0] == {"column 1": "0", "name": "王伟", "age": "31"}


# ---------------------------------------------------------------------- notebooks, HTML, SVG
def test_notebook_cells_and_outputs() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n...").decode()
    notebook = {
        "nbformat": 4,
        "metadata": {"kernelspec": {"name": "python3"}},
        "cells": [
            {"cell_type": "markdown", "source": ["# Title\n", "text"]},
            {
                "cell_type": "code",
                "source": "print(1)",
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": ["1\n"]},
                    {
                        "output_type": "display_data",
                        "data": {
                            "text/html": "<table><tr><th>a</th><th>b</th></tr>"
                            "<tr><td>1</td><td>2</td></tr></table>",
                            "image/png": png,
                            "application/json": {"k": "v"},
                        },
                    },
                    {"output_type": "error", "traceback": ["Traceback", "ValueError: x"]},
                ],
            },
        ],
    }
    items = list(notebook_items(json.dumps(notebook)))
    texts = {item.location: item.text for item in only(items, TextItem)}
    assert texts["cell 1, source"] == "# Title\ntext"
    assert texts["cell 2, output 1"] == "1\n"
    assert "ValueError" in texts["cell 2, output 3"]
    assert "python3" in texts["metadata"]
    (table,) = only(items, TableItem)
    assert table.location == "cell 2, output 2 (text/html), table 1"
    assert rows_of(table) == [{"a": "1", "b": "2"}]
    (image,) = only(items, MemberItem)
    assert image.name == "image.png" and image.data.startswith(b"\x89PNG")
    with pytest.raises(ReadError):
        list(notebook_items("[1, 2]"))


def test_html_tables_text_and_scripts() -> None:
    html = (
        "<html><script>var secret = 1;</script><p>Intro</p>"
        "<table><thead><tr><th></th><th>x</th></tr></thead>"
        "<tbody><tr><th>0</th><td>5</td></tr><tr><th>1</th><td>6</td></tr></tbody></table>"
    )
    items = list(html_items(html))
    (table,) = only(items, TableItem)
    assert rows_of(table) == [{"column 1": "0", "x": "5"}, {"column 1": "1", "x": "6"}]
    (text,) = only(items, TextItem)
    assert "Intro" in text.text and "secret" not in text.text


def test_svg_text_comments_and_attributes() -> None:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg"><!-- 王伟 -->'
        '<text x="1" y="2">Income by <tspan>district</tspan></text>'
        '<g id="series-13812345678"><path d="M0 0L1 1"/></g></svg>'
    )
    items = list(svg_items(svg))
    assert only(items, ImageItem)
    text = only(items, TextItem)[0].text
    assert "王伟" in text and "district" in text and "13812345678" in text and "M0 0" not in text


# ---------------------------------------------------------------------- images
def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_png_text_chunks_and_what_follows_the_end() -> None:
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        + png_chunk(b"tEXt", b"Comment\0hello")
        + png_chunk(b"zTXt", b"Note\0\0" + zlib.compress(b"compressed words"))
        + png_chunk(b"IDAT", zlib.compress(b"\0\0"))
        + png_chunk(b"IEND", b"")
    )
    items = list(png_items(data))
    assert only(items, ImageItem) and not only(items, Problem)
    assert only(items, TextItem)[0].text == "Comment: hello\nNote: compressed words"
    items = list(png_items(data + b"a,b\n1,2\n"))
    (problem,) = only(items, Problem)
    assert problem.reason == "8 bytes follow the end of the image"
    assert only(items, MemberItem)[0].data == b"a,b\n1,2\n"


def test_jpeg_comments_and_what_follows_the_end() -> None:
    comment = b"made by hand"
    data = (
        b"\xff\xd8"
        + b"\xff\xfe"
        + struct.pack(">H", len(comment) + 2)
        + comment
        + b"\xff\xda"
        + struct.pack(">H", 2)
        + b"\x12\xff\x00\x34"
        + b"\xff\xd9"
    )
    items = list(jpeg_items(data))
    assert only(items, TextItem)[0].text == "made by hand" and not only(items, Problem)
    assert only(list(jpeg_items(data + b"hidden")), MemberItem)[0].data == b"hidden"


# ---------------------------------------------------------------------- archives
def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tarred(members: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_zip_members() -> None:
    items = list(
        zip_items(source(zipped({"a.csv": b"x", "d/b.txt": b"y"})), RULES, Unpacked(1 << 20))
    )
    assert [(m.name, m.data, m.archived) for m in items] == [
        ("a.csv", b"x", True),
        ("d/b.txt", b"y", True),
    ]


def test_zip_limits() -> None:
    many = {f"{n}.txt": b"x" for n in range(RULES.archive_members + 1)}
    items = list(zip_items(source(zipped(many)), RULES, Unpacked(1 << 20)))
    assert "more than the 1000 allowed" in only(items, Problem)[0].reason
    assert len(only(items, MemberItem)) == RULES.archive_members
    bomb = list(zip_items(source(zipped({"z": b"\0" * (4 << 20)})), RULES, Unpacked(1 << 30)))
    assert len(bomb) == 1 and "unpacks to 4,194,304 bytes" in bomb[0].reason
    small = list(zip_items(source(zipped({"z": b"\0" * 5000})), RULES, Unpacked(1 << 30)))
    assert isinstance(small[0], MemberItem)  # small files compress well and are harmless
    over = list(zip_items(source(zipped({"a": b"x" * 100})), RULES, Unpacked(10)))
    assert isinstance(over[0], Problem)  # the file's unpacking budget is spent


def test_zip_links_and_encrypted_members() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("passwd")
        link.external_attr = (0o120777 << 16) | 0x20
        archive.writestr(link, "/etc/passwd")
        archive.writestr("ok.txt", "fine")
    raw = bytearray(buffer.getvalue())
    local = raw.find(b"PK\x03\x04", raw.find(b"ok.txt") - 40)  # the second member's header
    central = raw.rfind(b"PK\x01\x02")
    for position, offset in ((local, 6), (central, 8)):
        raw[position + offset] |= 0x1  # the encrypted flag
    items = list(zip_items(source(bytes(raw)), RULES, Unpacked(1 << 20)))
    assert [(p.location, p.reason) for p in items if isinstance(p, Problem)] == [
        ("passwd", "a link: it may not leave"),
        ("ok.txt", "encrypted: its contents cannot be checked"),
    ]


def test_tar_members_links_and_compression() -> None:
    for mode in ("w", "w:gz", "w:bz2", "w:xz"):
        data = tarred({"a.csv": b"1,2\n"}, mode)
        (member,) = tar_items(source(data), RULES, Unpacked(1 << 20))
        assert isinstance(member, MemberItem) and member.data == b"1,2\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("etc")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    (problem,) = tar_items(source(buffer.getvalue()), RULES, Unpacked(1 << 20))
    assert isinstance(problem, Problem) and "link" in problem.reason


def test_gzip_single_files_and_compressed_tars() -> None:
    (member,) = gzip_items(
        source(gzip.compress(b"hello"), "notes.txt.gz"), RULES, Unpacked(1 << 20)
    )
    assert isinstance(member, MemberItem) and (member.name, member.data) == ("notes.txt", b"hello")
    inner = list(gzip_items(source(tarred({"x.csv": b"1"}, "w:gz")), RULES, Unpacked(1 << 20)))
    assert [m.name for m in only(inner, MemberItem)] == ["x.csv"]
    (bomb,) = gzip_items(source(gzip.compress(b"\0" * (4 << 20))), RULES, Unpacked(1 << 30))
    assert isinstance(bomb, Problem)
    with pytest.raises(ReadError):
        list(gzip_items(source(b"\x1f\x8bnot gzip"), RULES, Unpacked(1 << 20)))


# ---------------------------------------------------------------------- encoded runs
def test_encoded_runs_in_text() -> None:
    payload = b"district,count\n" * 20
    wrapped = base64.encodebytes(payload).decode()  # MIME: lines of 76 characters
    urlsafe = base64.urlsafe_b64encode(payload).decode()
    text = f"intro\n{wrapped}middle {payload.hex()} end\nx = '{urlsafe}'\n"
    after = 2 + wrapped.count("\n")  # the line after the wrapped run
    blobs = list(find_blobs(text, 64))
    assert [(b.encoding, b.line, b.data) for b in blobs] == [
        ("base64", 2, payload),
        ("hex", after, payload),
        ("base64", after + 1, payload),
    ]


def test_words_and_pseudonyms_are_not_decoded() -> None:
    assert not looks_encoded("a" * 80)  # one case, no digits: a word
    assert not looks_encoded("ghijklmnop" * 7)  # a keyed pseudonym's letters
    assert not looks_encoded("1234567890" * 8)  # a number
    assert looks_encoded("QUJD" * 20 + "+/")
    assert looks_encoded(base64.b64encode(b"1,2\n" * 30).decode())  # no digit in it
    assert (
        list(find_blobs("averyveryverylongidentifierwithoutanydigitsatallbutquitelongindeed", 64))
        == []
    )
    assert decode_run("abcde") is None  # five characters are no whole bytes
    assert decode_run("0a1b") == ("hex", b"\x0a\x1b")
