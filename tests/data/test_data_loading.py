"""Decoding, transforms, the corrupt-image policy and the train/test loaders."""
from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from igoas.data import (IMAGENET_MEAN, IMAGENET_STD, ImageDataset, Sample, build_test_loader, build_train_loader,
                        build_transforms, collate_skipping_failed, read_image)
from igoas.utils.errors import ConfigError, DatasetError
from igoas.imaging.images import image_to_tensor, load_image


@pytest.fixture
def pictures(tmp_path: Path) -> list[Sample]:
    """Twelve 32x16 images of 4 identities with a left/right asymmetry (to see flips)."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(12):
        pixels = rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)
        pixels[:, :8] = (200, 30, 30)
        path = tmp_path / f"{i // 3:04d}_c{i % 3 + 1}s1_{i:06d}_00.png"
        Image.fromarray(pixels).save(path)
        samples.append(Sample(str(path), i // 3, i % 3))
    return samples


def test_read_image_gives_rgb_uint8_for_every_format_and_mode(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (20, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "a.tif")
    Image.fromarray(pixels).convert("L").save(tmp_path / "grey.jpg")
    png, tif = read_image(str(tmp_path / "a.png")), read_image(str(tmp_path / "a.tif"))
    assert png.dtype == torch.uint8 and png.shape == (3, 20, 10)
    assert torch.equal(png, tif) and torch.equal(png, torch.from_numpy(pixels).permute(2, 0, 1))
    assert read_image(str(tmp_path / "grey.jpg")).shape == (3, 20, 10)
    assert torch.equal(read_image(str(tmp_path / "a.png"), backend="pil"), png)


def write_png16(path: Path, values: np.ndarray) -> None:
    """A 16-bit grey (H x W x 1) or RGB (H x W x 3) PNG, which PIL cannot write."""
    height, width, channels = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, {1: 0, 3: 2}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_every_mode_decodes_to_the_same_8_bit_rgb_on_every_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    wide = rng.integers(0, 65536, (8, 6, 3), dtype=np.uint16)
    write_png16(tmp_path / "rgb16.png", wide)
    write_png16(tmp_path / "grey16.png", wide[..., :1])
    Image.fromarray(pixels).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(pixels).convert("LA").save(tmp_path / "grey_alpha.png")
    Image.fromarray(pixels).convert("CMYK").save(tmp_path / "cmyk.jpg")
    first, second = Image.fromarray(pixels), Image.fromarray(255 - pixels)
    first.save(tmp_path / "animated.gif", save_all=True, append_images=[second])
    (tmp_path / "animated_named.png").write_bytes((tmp_path / "animated.gif").read_bytes())
    high_byte = torch.from_numpy((wide >> 8).astype(np.uint8)).permute(2, 0, 1)
    expected = {"rgb16.png": high_byte, "grey16.png": high_byte[:1].expand(3, -1, -1)}
    for path in sorted(tmp_path.iterdir()):
        decoded = [read_image(str(path), backend) for backend in ("pil", "auto")]
        with Image.open(path) as image:
            decoded += [load_image(path), image_to_tensor(image)]
        reference = expected.get(path.name, decoded[0])
        assert reference.dtype == torch.uint8 and reference.shape == (3, 8, 6), path.name
        for tensor in decoded:  # training, evaluation and inference all see these pixels
            assert torch.equal(tensor, reference), path.name
    assert int(expected["rgb16.png"].max()) > 200  # the 16-bit values were scaled, not clipped to white


def test_test_transform_resizes_and_normalises(pictures: list[Sample]) -> None:
    transform = build_transforms(64, 32, train=False)
    out = transform(read_image(pictures[0].path))
    assert out.shape == (3, 64, 32) and out.dtype == torch.float32
    red = torch.tensor([200 / 255, 30 / 255, 30 / 255])
    expected = (red - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[:, 32, 4], expected, atol=1e-2)  # the left half is flat red
    assert torch.equal(out, transform(read_image(pictures[0].path)))


def test_train_transform_flip_pad_jitter_and_erasing(pictures: list[Sample]) -> None:
    image = read_image(pictures[0].path)
    plain = build_transforms(64, 32, train=False)(image)
    assert torch.equal(build_transforms(64, 32, train=True, flip=1.0)(image), plain.flip(-1))
    assert torch.equal(build_transforms(64, 32, train=True, flip=0.0)(image), plain)
    torch.manual_seed(0)
    padded = [build_transforms(64, 32, train=True, flip=0.0, pad=8)(image) for _ in range(6)]
    assert all(p.shape == (3, 64, 32) for p in padded) and any(not torch.equal(p, plain) for p in padded)
    assert not torch.equal(build_transforms(64, 32, train=True, flip=0.0, color_jitter=0.5)(image), plain)
    erased = build_transforms(64, 32, train=True, flip=0.0, random_erasing=1.0)(image)
    assert (erased == 0).all(dim=0).sum() > 20  # a block set to the mean (0 after normalising)


def test_random_erasing_draws_zhongs_area_range() -> None:
    """Areas up to 40 % of the image, as Zhong et al. and torchreid (torchvision stops at 33 %)."""
    image = torch.full((3, 80, 40), 128, dtype=torch.uint8)
    transform = build_transforms(80, 40, train=True, flip=0.0, random_erasing=1.0)
    torch.manual_seed(0)
    areas = [float((transform(image) == 0).all(dim=0).float().mean()) for _ in range(400)]
    assert min(areas) < 0.05 and 0.34 < max(areas) <= 0.41


def test_image_dataset_items(pictures: list[Sample]) -> None:
    item = ImageDataset(pictures, build_transforms(64, 32, train=False))[4]
    assert set(item) == {"image", "pid", "camid", "path", "index"}
    assert (item["pid"], item["camid"], item["index"], item["path"]) == (1, 1, 4, pictures[4].path)
    assert type(item["image"]) is torch.Tensor


def test_corrupt_image_is_skipped_and_logged(pictures: list[Sample], caplog: pytest.LogCaptureFixture) -> None:
    Path(pictures[2].path).write_bytes(b"\x89PNG broken")
    dataset = ImageDataset(pictures, build_transforms(64, 32, train=False), on_error="skip")
    with caplog.at_level(logging.WARNING):
        assert dataset[2] is None
    assert pictures[2].path in caplog.text
    batch = collate_skipping_failed([dataset[i] for i in range(4)])
    assert batch["image"].shape == (3, 3, 64, 32) and batch["index"].tolist() == [0, 1, 3]
    with pytest.raises(DatasetError, match="every image of a batch"):
        collate_skipping_failed([None, None])


def test_corrupt_image_fails_when_asked(pictures: list[Sample]) -> None:
    Path(pictures[2].path).write_bytes(b"")
    with pytest.raises(DatasetError, match=Path(pictures[2].path).name):
        ImageDataset(pictures, on_error="fail")[2]
    with pytest.raises(DatasetError, match="on_error"):
        ImageDataset(pictures, on_error="ignore")


def test_train_loader_goes_on_without_a_corrupt_image(pictures: list[Sample]) -> None:
    Path(pictures[5].path).write_bytes(b"garbage")
    loader = build_train_loader(pictures, batch_size=4, num_workers=0, seed=0, height=64, width=32)
    sizes = [len(batch["pid"]) for batch in loader]
    assert sorted(sizes) == [3, 4, 4]
    assert loader.sampler.state_dict()["consumed"] == 12


def test_identity_loader_with_a_worker_process(pictures: list[Sample]) -> None:
    loader = build_train_loader(pictures, batch_size=4, sampler="identity", num_instances=2, num_workers=1, seed=0,
                                height=64, width=32, pin_memory=False)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 64, 32) and len(set(batch["pid"].tolist())) == 2


def test_train_loader_rejects_bad_settings(pictures: list[Sample]) -> None:
    with pytest.raises(ConfigError, match="sampler"):
        build_train_loader(pictures, 4, sampler="balanced", num_workers=0)
    with pytest.raises(ConfigError, match="empty"):
        build_train_loader([], 4, num_workers=0)


def test_test_loader_keeps_order_and_every_sample(pictures: list[Sample]) -> None:
    loader = build_test_loader(pictures, batch_size=5, num_workers=0, height=64, width=32)
    indices = [i for batch in loader for i in batch["index"].tolist()]
    assert indices == list(range(12))
