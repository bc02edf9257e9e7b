"""Uploaded bytes to an image, refusing anything that is not a modest, well-formed picture.

A web page accepts files from anyone who can reach it, so the checks come before any
pixel is decoded: a size cap on the bytes, a cap on width x height read from the header
(a decompression bomb is a small file that declares a huge image), and PIL's own bomb
guard as a second line. Every refusal is an `UploadError` whose message says what was
wrong and what is accepted; the page shows it and the server carries on.

`KeptUploads` holds the latest uploads in memory, so the page can search the same file
again (another top-K, occlusion or re-ranking) without the browser sending it again.
"""
from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import PurePath, PureWindowsPath

import torch

from igoas.imaging.images import IMAGE_FORMATS, ImageDecodeError, decode_image_data, max_image_pixels
from igoas.utils.errors import IgoasError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 25_000_000  # width x height; a 5000 x 5000 photo is fine, a 50000 x 50000 bomb is not
KEPT_UPLOADS = 32  # uploads kept for searching again, the most recently used first
KEPT_UPLOAD_BYTES = 64 * 1024 * 1024  # and at most this many bytes of them in all
UPLOAD_ID = re.compile(r"[0-9a-f]{64}")  # a SHA-256 in hex: what the page sends back to search a kept upload
MAX_NAME = 120  # characters of a file name shown on the page


class UploadError(IgoasError):
    """An upload the server refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def size_text(count: int) -> str:
    """A byte count as people read a limit: "10 MB", "1.5 MB", "512 kB", "800 bytes"."""
    for unit, size in (("MB", 1024 * 1024), ("kB", 1024)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


def decode_upload(data: bytes, name: str = "upload", max_bytes: int = MAX_UPLOAD_BYTES,
                  max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """The uploaded image as a 3 x H x W uint8 tensor, or an `UploadError` that says why not."""

    if len(data) > max_bytes:
        raise UploadError(f"{name}: the file is larger than the {size_text(max_bytes)} limit; "
                          "upload a smaller image (a person crop needs a few hundred kB at most)", status=413)
    if not data:
        raise UploadError(f"{name}: the file is empty; choose an image file")
    try:
        return decode_image_data(data, max_pixels=min(max_pixels, max_image_pixels()))
    except ImageDecodeError as err:
        if err.too_large:
            raise UploadError(f"{name}: refused: {err}", status=413) from None
        raise UploadError(f"{name}: {err}; upload a complete {', '.join(IMAGE_FORMATS)} file") from None


def upload_name(filename: str) -> str:
    """The file name a browser sent, without any folders (some send the client's full path), shortened for the page."""
    name = PurePath(PureWindowsPath(filename).name).name.strip() or "upload"
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 3] + "..."


@dataclass(frozen=True)
class KeptUpload:
    """An upload as it was received: its file name and its bytes (decoded again when searched again)."""

    name: str
    data: bytes


class KeptUploads:
    """The latest uploads by the SHA-256 of their name and bytes, bounded in count and bytes.

    Memory only: an id is a key of this table and names nothing on disk, so no path can be
    reached through it. The least recently used upload is dropped first; an id that is not
    kept (dropped, or from before a restart) is refused with a message to upload again.
    Safe to use from the app's threads.
    """

    def __init__(self, count: int = KEPT_UPLOADS, max_bytes: int = KEPT_UPLOAD_BYTES) -> None:
        self.count, self.max_bytes = count, max_bytes
        self._uploads: OrderedDict[str, KeptUpload] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, name: str, data: bytes) -> str:
        """Keep one upload; returns its id."""
        upload_id = hashlib.sha256(name.encode("utf-8", "replace") + b"\0" + data).hexdigest()
        with self._lock:
            if upload_id not in self._uploads:
                self._bytes += len(data)
            self._uploads[upload_id] = KeptUpload(name, data)
            self._uploads.move_to_end(upload_id)
            while len(self._uploads) > self.count or self._bytes > self.max_bytes:
                self._bytes -= len(self._uploads.popitem(last=False)[1].data)
        return upload_id

    def get(self, upload_id: str) -> KeptUpload:
        """The upload kept under `upload_id`, or an `UploadError` saying to upload it again."""
        if not UPLOAD_ID.fullmatch(upload_id):
            raise UploadError(f"upload_id {upload_id[:80]!r} is not an upload id (the 64 hex digits the page "
                              "returns for an upload); upload the image again")
        with self._lock:
            upload = self._uploads.get(upload_id)
            if upload is not None:
                self._uploads.move_to_end(upload_id)
        if upload is None:
            raise UploadError(f"the uploaded query is no longer kept (the server keeps the {self.count} latest "
                              f"uploads, {size_text(self.max_bytes)} at most, until it restarts); upload the "
                              "image again", status=410)
        return upload

    def name(self, upload_id: str) -> str | None:
        """The file name of a kept upload, or None: for showing, without refreshing its place."""
        with self._lock:
            upload = self._uploads.get(upload_id)
        return None if upload is None else upload.name

    def held(self) -> tuple[int, int]:
        """(uploads, bytes) kept now."""
        with self._lock:
            return len(self._uploads), self._bytes
