"""Session-wide fixtures: one tiny synthetic dataset and one tiny trained checkpoint.

Both are built once per test session in a temporary folder, so every test that needs
"real" data or a "trained" model shares the same few seconds of set-up and nothing is
ever downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests run tiny inputs, where OpenMP's thread start-up and barriers cost more than a
# second thread saves, and on a busy machine they cost many times more (measured: one
# small forward 0.17 s on one thread, 1.3-3.9 s on two while other jobs ran).
torch.set_num_threads(int(os.environ.get("IGOAS_TEST_THREADS", "1")))

TINY_HEIGHT, TINY_WIDTH = 64, 32
TINY_NUM_IDS = 12
TINY_TRAIN_STEPS = 4
TINY_BATCH = 16


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory):
    """The user cache folder (`$XDG_CACHE_HOME`: served features, converted OpenVINO models)
    in the session's temporary folder, never the home folder of whoever runs the tests."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic occluded-pedestrian dataset (Market-1501 layout), rendered once."""
    from igoas.data import render_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    render_synthetic(root, num_ids=TINY_NUM_IDS, seed=0, size="tiny")
    return root


@pytest.fixture(scope="session")
def random_trunk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random ResNet-18 as a torchvision state dict, for runs that need
    `model.pretrained` to name weights (the fixbase epochs train only when it does)."""
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("trunk") / "resnet18_random.pth"
    torch.save(resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-18 IGOAS model at 64x32 trained a few steps on the synthetic set, saved as a checkpoint.

    Trained with `compute_losses` directly so the fixture does not depend on the trainer;
    a handful of steps is enough to move every weight away from its initial value.
    """
    from igoas.artifacts.checkpoint import checkpoint_payload, save_checkpoint
    from igoas.imaging.preprocess import Preprocess
    from igoas.data import ImageDataset, build_dataset, build_transforms
    from igoas.model.losses import LossConfig, compute_losses
    from igoas.model import build_model

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    dataset = build_dataset("synthetic", synthetic_root)
    images = ImageDataset(dataset.train, build_transforms(TINY_HEIGHT, TINY_WIDTH, train=True))
    loader = torch.utils.data.DataLoader(
        images, batch_size=TINY_BATCH, shuffle=True, drop_last=True, generator=generator, num_workers=0
    )
    model = build_model("igoas", num_classes=dataset.num_train_pids, pretrained=False, backbone="resnet18")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=5e-4)
    loss_config = LossConfig()
    model.train()
    step = 0
    while step < TINY_TRAIN_STEPS:
        for batch in loader:
            output = model(batch["image"], progress=step / TINY_TRAIN_STEPS, generator=generator)
            loss = compute_losses(output, batch["pid"], loss_config).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == TINY_TRAIN_STEPS:
                break
    model.eval()
    occlusion_state = getattr(model.occlusion, "state_dict", None)
    path = tmp_path_factory.mktemp("tiny_checkpoint") / "tiny.pth"
    save_checkpoint(path, checkpoint_payload(model, Preprocess(TINY_HEIGHT, TINY_WIDTH), epoch=1, iteration=step,
                                             occlusion_state=occlusion_state() if callable(occlusion_state) else None))
    return path

# IGOAS_TEST_MKLDNN=0 runs the suite with oneDNN's CPU kernels off (ATen's own instead), one of
# the kernel sets .ci/run checks the kernel-sensitive tests under (the others: ATEN_CPU_CAPABILITY).
if os.environ.get("IGOAS_TEST_MKLDNN", "1") == "0":
    torch.backends.mkldnn.enabled = False
