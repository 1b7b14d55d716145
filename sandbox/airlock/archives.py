"""Archives opened member by member within limits: zip, tar (plain or compressed) and
gzip. Each member comes back as bytes to be read again, as if it had been a file of the
export; nothing is written to disk.

Limits (``policies/airlock.yaml``): members per archive, the unpacked size of one
top-level file's archives together, and the expansion ratio (unpacked over packed) of a
member or a whole archive above :data:`RATIO_FLOOR` (small, repetitive files compress
well and are harmless). A member is read up to its limit plus one byte, so a header
that lies about the size cannot make the reader hold more. Encrypted members, links and
special files cannot be checked and are findings.
"""

from __future__ import annotations

import gzip
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from sandbox.airlock.files import Source
from sandbox.airlock.policy import AirlockRules
from sandbox.airlock.tables import Item, MemberItem, Problem, ReadError

RATIO_FLOOR = 1 << 20


@dataclass
class Unpacked:
    """How many bytes the archives of one top-level file may still unpack."""

    left: int


def zip_items(source: Source, rules: AirlockRules, unpacked: Unpacked) -> Iterator[Item]:
    with source.open() as handle:
        yield from _zip_members(handle, source, rules, unpacked)


def _zip_members(
    handle: BinaryIO, source: Source, rules: AirlockRules, unpacked: Unpacked
) -> Iterator[Item]:
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ReadError("not a readable zip archive") from None
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(infos) > rules.archive_members:
            yield Problem(
                "archive", "", f"{len(infos)} files, more than the {rules.archive_members} allowed"
            )
            infos = infos[: rules.archive_members]
        declared = sum(info.file_size for info in infos)
        if _bomb(declared, source.size, rules) or declared > unpacked.left:
            yield Problem(
                "archive",
                "",
                f"unpacks to {declared:,} bytes from {source.size:,}: beyond the limits "
                f"(ratio {rules.archive_expansion:g}, {rules.archive_bytes:,} bytes)",
            )
            return
        for info in infos:
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                yield Problem("archive", info.filename, "a link: it may not leave")
                continue
            if info.flag_bits & 0x1:
                yield Problem("archive", info.filename, "encrypted: its contents cannot be checked")
                continue
            if _bomb(info.file_size, info.compress_size, rules):
                yield Problem(
                    "archive",
                    info.filename,
                    f"unpacks to {info.file_size:,} bytes from {info.compress_size:,}",
                )
                continue
            limit = min(info.file_size, unpacked.left, rules.max_file_bytes)
            try:
                with archive.open(info) as member:
                    data = member.read(limit + 1)
            except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, ValueError):
                yield Problem("unreadable", info.filename, "a damaged or unsupported member")
                continue
            if len(data) > limit:
                yield Problem(
                    "archive", info.filename, "unpacks to more than its header or the limits say"
                )
                continue
            unpacked.left -= len(data)
            yield MemberItem(info.filename, info.filename, data, archived=True)


def tar_items(source: Source, rules: AirlockRules, unpacked: Unpacked) -> Iterator[Item]:
    with source.open() as handle:
        yield from _tar_members(handle, source, rules, unpacked)


def _tar_members(
    handle: BinaryIO, source: Source, rules: AirlockRules, unpacked: Unpacked
) -> Iterator[Item]:
    try:
        archive = tarfile.open(fileobj=handle, mode="r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        raise ReadError("not a readable tar archive") from None
    with archive:
        count = total = 0
        try:
            for member in archive:
                if member.isdir():
                    continue
                count += 1
                if count > rules.archive_members:
                    yield Problem(
                        "archive", "", f"more than the {rules.archive_members} files allowed"
                    )
                    return
                if not member.isfile():
                    yield Problem(
                        "archive", member.name, "a link or special file: it may not leave"
                    )
                    continue
                total += member.size
                if _bomb(total, source.size, rules) or member.size > unpacked.left:
                    yield Problem(
                        "archive",
                        member.name,
                        f"the archive unpacks to more than {total:,} bytes from "
                        f"{source.size:,}: beyond the limits",
                    )
                    return
                limit = min(member.size, rules.max_file_bytes)
                extracted = archive.extractfile(member)
                data = extracted.read(limit + 1) if extracted is not None else b""
                if len(data) > limit:
                    yield Problem("archive", member.name, "larger than the limits")
                    continue
                unpacked.left -= len(data)
                yield MemberItem(member.name, member.name, data, archived=True)
        except (tarfile.TarError, OSError, EOFError, zlib.error):
            yield Problem("unreadable", "", "the archive is damaged after its first members")


def gzip_items(source: Source, rules: AirlockRules, unpacked: Unpacked) -> Iterator[Item]:
    """A gzip file: a compressed tar is opened as a tar; anything else is one member."""
    try:
        with source.open() as raw, gzip.GzipFile(fileobj=raw) as handle:
            head = handle.read(512)
    except (OSError, EOFError, zlib.error):
        raise ReadError("not a readable gzip file") from None
    if len(head) >= 262 and head[257:262] == b"ustar":
        yield from tar_items(source, rules, unpacked)
        return
    limit = min(unpacked.left, rules.max_file_bytes, int(rules.archive_expansion * source.size))
    limit = max(limit, min(RATIO_FLOOR, unpacked.left))
    try:
        with source.open() as raw, gzip.GzipFile(fileobj=raw) as handle:
            data = handle.read(limit + 1)
    except (OSError, EOFError, zlib.error):
        raise ReadError("not a readable gzip file") from None
    if len(data) > limit:
        yield Problem(
            "archive",
            "",
            f"unpacks to more than {limit:,} bytes from {source.size:,}: beyond the limits",
        )
        return
    unpacked.left -= len(data)
    inner = source.name[:-3] if source.name.lower().endswith(".gz") else ""
    if source.name.lower().endswith(".tgz"):
        inner = source.name[:-4] + ".tar"
    yield MemberItem(
        inner.rsplit("/", 1)[-1], inner.rsplit("/", 1)[-1] or "content", data, archived=True
    )


def zip_expansion(source: Source, rules: AirlockRules) -> Problem | None:
    """A finding if a zip-based document (a workbook) would unpack beyond the limits:
    its reader unpacks its parts whole."""
    with source.open() as handle:
        try:
            with zipfile.ZipFile(handle) as archive:
                declared = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return None  # not a zip (an .xls): nothing is unpacked
    if _bomb(declared, source.size, rules):
        return Problem(
            "archive", "", f"unpacks to {declared:,} bytes from {source.size:,}: beyond the limits"
        )
    return None


def _bomb(unpacked: int, packed: int, rules: AirlockRules) -> bool:
    if unpacked > rules.archive_bytes:
        return True
    return unpacked > RATIO_FLOOR and unpacked > rules.archive_expansion * max(packed, 1)
