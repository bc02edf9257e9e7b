"""Files the tests build for themselves: tiny real images, dataset trees in their
published layouts, and a run folder written through the trainer's own logger, a decompression bomb,
random weights in the authors' checkpoint layout, and a tiny checkpoint."""
from __future__ import annotations

import io
import itertools
import json
import zlib
from pathlib import Path

import torch
from PIL import Image

from igoas.artifacts.checkpoint import checkpoint_payload, save_checkpoint
from igoas.imaging.preprocess import Preprocess
from igoas.model import build_model
from igoas.training.run_log import RunLogger

_DISTINCT = itertools.count()


def image_bytes(fmt: str = "JPEG", colour: tuple[int, int, int] | None = None, mode: str = "RGB") -> bytes:
    """A tiny real image in `fmt`, each one different unless `colour` is given, so trees
    can be decoded as well as parsed and contain no accidental duplicates."""
    if colour is None:
        n = next(_DISTINCT)
        colour = (n * 17 % 256, n // 15 * 23 % 256, 40)  # steps JPEG does not merge
    buffer = io.BytesIO()
    Image.new(mode, (8, 16), colour if mode == "RGB" else colour[0]).save(buffer, fmt)
    return buffer.getvalue()


def make_files(folder: Path, names: list[str], fmt: str = "JPEG") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(image_bytes(fmt))


MARKET_TRAIN = ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s3_077419_03.jpg",
                "0010_c6s4_002427_02.jpg"]
MARKET_QUERY = ["0003_c1s1_001051_00.jpg", "0005_c4s1_002051_00.jpg"]
MARKET_GALLERY = ["0003_c2s1_001101_01.jpg", "0005_c1s1_002201_02.jpg", "0005_c4s1_002301_01.jpg",
                  "0000_c3s1_000000_01.jpg", "-1_c1s1_000401_03.jpg"]


def make_market(root: Path, top: str = "market1501/Market-1501-v15.09.15") -> Path:
    folder = root / top
    make_files(folder / "bounding_box_train", MARKET_TRAIN)
    make_files(folder / "query", MARKET_QUERY)
    make_files(folder / "bounding_box_test", MARKET_GALLERY)
    return folder


def write_msmt17(root: Path, version: str = "V1") -> Path:
    folder = root / "msmt17" / f"MSMT17_{version}"
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    train = {"0000/0000_000_01_0303morning_0015_0.jpg": 0, "0000/0000_001_05_0303morning_0030_1.jpg": 0,
             "0001/0001_000_15_0303noon_0010_0.jpg": 1}
    val = {"0001/0001_002_03_0303noon_0020_0.jpg": 1}
    query = {"0000/0000_000_02_0303morning_0001_0.jpg": 0}  # test identities number from 0 again
    gallery = {"0000/0000_001_04_0303morning_0002_0.jpg": 0, "0001/0001_000_09_0303noon_0003_0.jpg": 1}
    for listing, image_dir, name in ((train, train_dir, "list_train.txt"), (val, train_dir, "list_val.txt"),
                                     (query, test_dir, "list_query.txt"), (gallery, test_dir, "list_gallery.txt")):
        make_files(folder / image_dir, list(listing))
        (folder / name).write_text("".join(f"{path} {pid}\n" for path, pid in listing.items()))
    return folder


def fake_run(run_dir: Path) -> None:
    """A run folder written through the trainer's own logger, so the formats cannot drift apart."""
    logger = RunLogger(run_dir, log_every=1, tensorboard=False, progress_bar=False)
    for step in range(1, 7):
        logger.step({"epoch": 1 + (step - 1) // 3, "iteration": step, "batch": 1 + (step - 1) % 3, "lr": 3e-4,
                     "loss": {"total": 5.0 / step, "id_global": 3.0 / step, "mask": 0.1},
                     "id_weights": {"global": 0.3, "suppression": 0.3, "concat": 0.4},
                     "occluded_fraction": 0.1 + 0.01 * step}, batch_images=8, total_steps=6)
    for epoch, (r1, m_ap) in enumerate([(40.0, 30.0), (55.0, 45.5), (50.0, 41.0)], start=1):
        results = {"query": {"R1": r1, "R5": r1 + 10, "R10": r1 + 15, "mAP": m_ap, "mINP": m_ap / 2},
                   "holistic": {"R1": r1 + 5, "R5": r1 + 12, "R10": r1 + 16, "mAP": m_ap + 3, "mINP": m_ap / 2}}
        logger.metrics(epoch, epoch * 3, results)
    logger.close()
    (run_dir / "config.yaml").write_text("model:\n  name: <igoas>\n")


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid header declaring width x height grey pixels over a few bytes of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# The authors' state-dict keys and shapes for 702 identities (tests/interop/fixtures).
OFFICIAL_LAYOUT = json.loads((Path(__file__).parent / "interop" / "fixtures" / "official_keys_702.json").read_text())


def random_official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the authors' layout, BatchNorm statistics and counters included."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in OFFICIAL_LAYOUT["tensors"].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.randint(1, 10_000, (), generator=generator, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.05
    return state


def tiny_checkpoint(path: Path, height: int = 64, width: int = 32) -> Path:
    """A random ResNet-18 baseline (3 identities) at height x width, saved as an igoas checkpoint."""
    torch.manual_seed(0)
    save_checkpoint(path, checkpoint_payload(build_model("baseline", num_classes=3, backbone="resnet18"),
                                             Preprocess(height, width)))
    return path
