"""Uploaded bytes to an image, refusing anything that is not a modest, well-formed picture.

A web page accepts files from anyone who can reach it, so the checks come before any
pixel is decoded: a size cap on the bytes, a cap on width x height read from the header
(a decompression bomb is a small file that declares a huge image), and PIL's own bomb
guard as a second line. Every refusal is an `UploadError` whose message says what was
wrong and what is accepted; the page shows it and the server carries on.
"""
from __future__ import annotations

import io
import warnings

import torch

from igoas.errors import IgoasError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 25_000_000  # width x height; a 5000 x 5000 photo is fine, a 50000 x 50000 bomb is not
FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")


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
    from PIL import Image, UnidentifiedImageError

    from igoas.data import pil_to_rgb

    if len(data) > max_bytes:
        raise UploadError(f"{name}: the file is larger than the {size_text(max_bytes)} limit; "
                          "upload a smaller image (a person crop needs a few hundred kB at most)", status=413)
    if not data:
        raise UploadError(f"{name}: the file is empty; choose an image file")
    accepted = ", ".join(FORMATS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UploadError(
                        f"{name}: the image declares {width} x {height} pixels, more than the {max_pixels:,} allowed "
                        "(a decompression bomb, or a photo far larger than a person crop); upload a smaller image",
                        status=413)
                image.load()
                return pil_to_rgb(image)
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UploadError(f"{name}: refused as a decompression bomb ({err}); upload a smaller image",
                          status=413) from None
    except UnidentifiedImageError:
        raise UploadError(f"{name}: not an image file; upload one of {accepted}") from None
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data inside a known format
        raise UploadError(f"{name}: a damaged image ({err}); upload a complete {accepted} file") from None
