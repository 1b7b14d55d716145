"""Documents attached to applications (the security commitment letter), kept by content.

A document is a PDF, PNG or JPEG of at most 10 MiB, recognised by its first bytes (the
name and the browser's media type are not trusted). It is stored once under its SHA-256
in ``<data_dir>/attachments/``, owner-only and read-only, written to a temporary name
and renamed, so a document is whole or absent; the database row names it by its digest.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

MAX_BYTES = 10 << 20
SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)
DIGEST = re.compile(r"^[0-9a-f]{64}$")


class AttachmentRefused(ValueError):
    """The document cannot be attached; the message says why."""


class AttachmentStore:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self.folder = folder

    @staticmethod
    def check(content: bytes) -> str:
        """The document's media type; :class:`AttachmentRefused` if it is not one."""
        if not content:
            raise AttachmentRefused("the document is empty")
        if len(content) > MAX_BYTES:
            raise AttachmentRefused(f"a document has at most {MAX_BYTES >> 20} MiB")
        for magic, media_type in SIGNATURES:
            if content.startswith(magic):
                return media_type
        raise AttachmentRefused("a document is a PDF, PNG or JPEG file")

    def store(self, content: bytes) -> str:
        """Keep ``content`` (idempotent) and return its SHA-256."""
        self.check(content)
        digest = hashlib.sha256(content).hexdigest()
        target = self.folder / digest
        if target.exists():
            return digest
        descriptor, partial = tempfile.mkstemp(dir=self.folder, prefix=".partial-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(partial, 0o400)
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return digest

    def read(self, digest: str) -> bytes:
        if not DIGEST.match(digest):
            raise AttachmentRefused("not a document's digest")
        content = (self.folder / digest).read_bytes()
        if hashlib.sha256(content).hexdigest() != digest:
            raise AttachmentRefused(f"the stored document {digest} has changed")
        return content
