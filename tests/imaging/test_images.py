"""One image reader for every path: damaged files, decompression bombs, EXIF orientation,
wide TIFF samples and the one list of formats.

The damaged-PNG cases run in a subprocess: the decoder they once reached took the process
down with SIGSEGV, so a regression must fail the test instead of killing the test run.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from factories import bomb_png

from igoas.imaging.images import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, IMAGE_FORMATS, ImageDecodeError,
                                    decode_image_data, load_image, read_image)
from igoas.utils.errors import IgoasError

PIXELS = np.random.default_rng(0).integers(0, 256, (16, 8, 3), dtype=np.uint8)
# a smooth 16 x 8 picture that lossy codecs keep and any turn changes: rows red, columns green
_ROWS, _COLUMNS = np.meshgrid(np.arange(16), np.arange(8), indexing="ij")
PICTURE = np.stack([_ROWS * 16, _COLUMNS * 32, np.full_like(_ROWS, 128)], axis=2).astype(np.uint8)


def _encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def _damaged_png() -> bytes:
    """A PNG with one byte flipped just after its IDAT tag: libpng reports an error, which
    torchvision's decode_png answered with SIGSEGV."""
    data = bytearray(_encoded(PIXELS, "PNG"))
    data[data.index(b"IDAT") + 8] ^= 0xFF
    return bytes(data)


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_a_damaged_png_is_an_error_naming_the_file_not_a_crash(tmp_path: Path) -> None:
    damaged = tmp_path / "0001_c1s1_000001_00.png"
    damaged.write_bytes(_damaged_png())
    result = _run("import sys; from igoas.imaging.images import load_image; load_image(sys.argv[1])", str(damaged))
    assert result.returncode == 1, (result.returncode, result.stderr[-500:])  # an exception, not a signal death
    assert f"{damaged}: not a readable image: damaged image data" in result.stderr


@pytest.mark.slow
def test_extract_skips_a_damaged_png_by_name_with_and_without_workers(tiny_checkpoint: Path, synthetic_root: Path,
                                                                       tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    good = sorted((synthetic_root / "query").glob("*.jpg"))[:2]
    for path in good:
        shutil.copy(path, folder / path.name)
    damaged = folder / "0099_c2s1_000001_00.png"
    damaged.write_bytes(_damaged_png())
    for workers in ("0", "2"):
        out = tmp_path / f"features{workers}.npz"
        result = _run("import sys; from igoas.cli import main; sys.exit(main(sys.argv[1:]))", "extract",
                      str(tiny_checkpoint), str(folder), "--out", str(out), "--workers", workers, "--no-progress")
        assert result.returncode == 0, (workers, result.returncode, result.stderr[-800:])
        assert f"skipped unreadable image: {damaged}" in result.stderr and "wrote 2 embeddings" in result.stdout


def test_training_and_evaluation_items_skip_a_damaged_png_by_name(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from igoas.data import ImageDataset
    from igoas.data.base import Sample
    from igoas.utils.errors import DatasetError

    damaged = tmp_path / "0001_c1s1_000001_00.png"
    damaged.write_bytes(_damaged_png())
    samples = [Sample(str(damaged), 1, 0)]
    with caplog.at_level("WARNING"):
        assert ImageDataset(samples)[0] is None
    assert f"skipping unreadable image {damaged} (damaged image data" in caplog.text
    with pytest.raises(DatasetError, match=f"cannot read image {damaged}: damaged image data"):
        ImageDataset(samples, on_error="fail")[0]


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(10000, 10000))  # over igoas's limit, under PIL's own guard
    assert bomb.stat().st_size < 1000
    with pytest.raises(IgoasError, match=r"bomb.png: not a readable image: it declares 10000 x 10000 pixels, more "
                                         r"than the 64_000_000 allowed .* raise IGOAS_MAX_IMAGE_PIXELS"):
        load_image(bomb)
    with pytest.raises(ImageDecodeError, match="it declares 900_000_000 pixels") as raised:
        decode_image_data(bomb_png(30000, 30000))  # beyond PIL's guard too, which stops it at open
    assert raised.value.too_large
    monkeypatch.setenv("IGOAS_MAX_IMAGE_PIXELS", "100")
    small = tmp_path / "small.png"
    small.write_bytes(_encoded(PIXELS, "PNG"))  # 128 pixels
    with pytest.raises(IgoasError, match="16 x 8|8 x 16"):
        load_image(small)
    monkeypatch.setenv("IGOAS_MAX_IMAGE_PIXELS", "128")
    assert load_image(small).shape == (3, 16, 8)
    monkeypatch.setenv("IGOAS_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(IgoasError, match=f"IGOAS_MAX_IMAGE_PIXELS='lots' is not a pixel count.*{DEFAULT_MAX_PIXELS:_}"):
        load_image(small)


def test_a_bad_pixel_limit_stops_a_dataset_before_any_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from igoas.data import ImageDataset

    monkeypatch.setenv("IGOAS_MAX_IMAGE_PIXELS", "-5")
    with pytest.raises(IgoasError, match="IGOAS_MAX_IMAGE_PIXELS='-5'"):
        ImageDataset([])


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_on_every_path(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    # a file stores the sensor's pixels and the orientation that turns them upright (PIXELS)
    stored = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    sensor = np.asarray(Image.fromarray(PICTURE).transpose(stored))
    for fmt in ("JPEG", "PNG", "WEBP"):
        data = _encoded(sensor, fmt, exif=exif, **({"quality": 95} if fmt != "PNG" else {}))
        decoded = [decode_image_data(data, backend) for backend in ("auto", "pil")]
        assert all(tensor.shape == (3, 16, 8) for tensor in decoded), (fmt, orientation)
        assert torch.equal(decoded[0], decoded[1]), fmt
        error = (decoded[0].permute(1, 2, 0).int() - torch.from_numpy(PICTURE).int()).abs().float().mean()
        assert error < 8.0, (fmt, float(error))  # upright: a turned picture is off by 40 or more


def test_serve_uploads_are_turned_upright_too() -> None:
    from igoas.deploy.serve import decode_upload

    exif = Image.Exif()
    exif[0x0112] = 6
    sensor = np.ascontiguousarray(np.rot90(PIXELS))  # 8 x 16, stored turned
    assert decode_upload(_encoded(sensor, "PNG", exif=exif), "phone.png").shape == (3, 16, 8)


def test_wide_tiffs_are_scaled_by_their_declared_range(tmp_path: Path) -> None:
    grey = PIXELS[..., 0]
    cases = {
        "float.tif": Image.fromarray(grey.astype(np.float32) / 255.0),
        "float255.tif": Image.fromarray(grey.astype(np.float32)),
        "int32.tif": Image.fromarray(grey.astype(np.int32) << 23),  # signed 32 bits declared
        "int16.png": Image.fromarray(grey.astype(np.uint16) << 8),
    }
    expected = torch.from_numpy(grey).expand(3, -1, -1)
    for name, image in cases.items():
        image.save(tmp_path / name)
        decoded = read_image(tmp_path / name).int()
        assert decoded.shape == (3, 16, 8), name
        assert int((decoded - expected.int()).abs().max()) <= 1, name  # not black, not clipped white


def test_a_file_that_is_no_image_names_the_formats_read(tmp_path: Path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("these are notes, not a picture")
    with pytest.raises(IgoasError) as raised:
        load_image(notes)
    message = str(raised.value)
    assert message.startswith(f"{notes}: not a readable image: not an image file: its first bytes match none of "
                              "JPEG/PNG/BMP/TIFF/WEBP/GIF")
    assert "avif" not in message.lower() and "torchvision" not in message
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(IgoasError, match="empty.png: not a readable image: the file is empty"):
        load_image(empty)


def test_one_list_of_formats_for_folders_datasets_and_uploads(tmp_path: Path) -> None:
    from igoas.data.base import list_images
    from igoas.deploy.extraction import folder_images
    from igoas.deploy.serve import decode_upload

    for fmt, suffixes in IMAGE_FORMATS.items():
        for suffix in suffixes:
            (tmp_path / f"0001_c1s1_{len(list(tmp_path.iterdir())):06d}_00{suffix.upper()}").write_bytes(
                _encoded(PIXELS, fmt))
        assert decode_upload(_encoded(PIXELS, fmt), f"a{suffixes[0]}").shape == (3, 16, 8)
    (tmp_path / "readme.txt").write_text("not listed")
    listed = folder_images(tmp_path).paths
    assert len(listed) == len(IMAGE_EXTENSIONS) == len(list_images(tmp_path))
    assert {Path(path).suffix.lower() for path in listed} == set(IMAGE_EXTENSIONS) >= {".webp", ".gif"}
    for path in listed:
        assert load_image(path).shape == (3, 16, 8), path
