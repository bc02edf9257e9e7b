"""BoT (Luo et al. 2019): the BNNeck, the center loss and its update, the presets, an exact resume."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from igoas.config import LossConfig, load_config, to_dict
from igoas.model.build import build_model
from igoas.model.losses import CenterLoss, compute_losses
from igoas.training.state import CenterState
from igoas.utils.errors import ConfigError

# The tiny-run fixtures of tests/training/test_trainer.py, shared as test_ema.py shares them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))


def _bnneck(num_classes: int = 5):
    torch.manual_seed(0)
    return build_model("baseline", num_classes=num_classes, backbone="resnet18", neck="bnneck",
                       extra_bottleneck=False)


def test_bnneck_triplet_sees_the_pooled_feature_and_id_the_normalised_one() -> None:
    model = _bnneck().train()
    assert model.feature_dim == 512 and not hasattr(model, "global_reduction")
    assert model.global_classifier.bias is None
    assert "bias" not in dict(model.global_neck.named_parameters())  # a zero buffer, never learnt
    assert torch.equal(model.global_neck.bias, torch.zeros(512))
    images = torch.randn(4, 3, 64, 32)
    output = model(images)
    pooled = model.global_pool(model._global_map(model._trunk(images)))
    assert torch.allclose(output.features["global"], pooled)
    normalised = torch.nn.functional.batch_norm(pooled, None, None, model.global_neck.weight, None, training=True)
    assert torch.allclose(output.logits["global"], model.global_classifier(normalised), atol=1e-5)
    assert output.logits["global"].shape == (4, 5)
    model.eval()
    embedding = model(images)
    expected = torch.nn.functional.normalize(model.global_neck(model.global_pool(model._global_map(
        model._trunk(images)))), dim=1)
    assert embedding.shape == (4, 512) and torch.allclose(embedding, expected, atol=1e-6)


def test_bnneck_shift_stays_zero_when_fixbase_reopens_the_module() -> None:
    from igoas.training.optim import open_layers

    model = _bnneck()
    open_layers(model, None)
    model(torch.randn(4, 3, 64, 32)).logits["global"].sum().backward()
    assert model.global_neck.weight.grad is not None and torch.equal(model.global_neck.bias, torch.zeros(512))


def test_bnneck_is_refused_on_the_two_branch_model() -> None:
    with pytest.raises(ConfigError, match="neck='bnneck'"):
        build_model("igoas", num_classes=5, backbone="resnet18", neck="bnneck")
    with pytest.raises(ConfigError, match="neck='other'"):
        build_model("baseline", num_classes=5, backbone="resnet18", neck="other")


def test_center_loss_value_and_gradient_by_hand() -> None:
    centers = CenterLoss(3, 2)
    with torch.no_grad():
        centers.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]]))
    features = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 1])
    loss = centers(features, labels)
    # squared distances 5, 1, 8 (to centers 0, 1, 1), averaged over the batch of 3
    assert loss.item() == pytest.approx(14 / 3)
    loss.backward()
    assert torch.allclose(features.grad, 2 / 3 * torch.tensor([[1.0, 2.0], [-1.0, 0.0], [2.0, -2.0]]))
    # d/dc_1 = -2/3 * ((0,1)-(1,1) + (3,-1)-(1,1)); the unused center 2 gets none
    assert torch.allclose(centers.centers.grad, torch.tensor([[-2 / 3, -4 / 3], [-2 / 3, 4 / 3], [0.0, 0.0]]))


def test_center_update_is_sgd_on_the_unweighted_gradient() -> None:
    weight, lr = 0.0005, 0.5
    state = CenterState(4, 3, weight, lr, seed=0)
    start = state.module.centers.detach().clone()
    features, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    state.zero_grad()
    (weight * state.module(features, labels)).backward()  # as in the total loss
    state.step()
    reference = CenterLoss(4, 3)
    with torch.no_grad():
        reference.centers.copy_(start)
    reference(features, labels).backward()
    assert torch.allclose(state.module.centers, start - lr * reference.centers.grad, atol=1e-6)
    assert torch.equal(state.module.centers[3], start[3])  # no identity of the batch: unmoved


def test_compute_losses_adds_the_weighted_center_term() -> None:
    model = _bnneck().train()
    output = model(torch.randn(4, 3, 64, 32))
    labels = torch.tensor([0, 0, 1, 1])
    centers = CenterLoss(5, 512)
    config = LossConfig(triplet="margin", center_weight=0.0005, id_weighting="mean")
    result = compute_losses(output, labels, config, centers=centers)
    expected = result.terms["id_global"] + result.terms["triplet"] + 0.0005 * result.terms["center"]
    assert torch.allclose(result.total, expected)
    assert torch.allclose(result.terms["center"], centers(output.features["global"], labels))
    with pytest.raises(ConfigError, match="loss.center_weight"):
        compute_losses(output, labels, config)


@pytest.mark.parametrize("preset", ["market1501_bot", "occluded_duke_bot"])
def test_presets_hold_the_published_recipe(preset: str) -> None:
    cfg = load_config(preset)
    assert cfg.data.dataset == {"market1501_bot": "market1501", "occluded_duke_bot": "occluded_duke"}[preset]
    assert (cfg.data.height, cfg.data.width) == (256, 128)
    assert to_dict(cfg.data.augment) == {"flip": 0.5, "pad": 10, "random_erasing": 0.5}
    assert (cfg.data.sampler, cfg.data.num_instances, cfg.data.batch_size) == ("identity", 4, 64)
    assert (cfg.model.name, cfg.model.backbone, cfg.model.pretrained, cfg.model.occlusion) == (
        "baseline", "resnet50", "imagenet1k_v1", "none")
    assert to_dict(cfg.model.options) == {"extra_bottleneck": False, "global_pooling": "avg", "neck": "bnneck"}
    assert (cfg.loss.label_smoothing, cfg.loss.triplet, cfg.loss.triplet_margin, cfg.loss.triplet_weight,
            cfg.loss.center_weight) == (0.1, "margin", 0.3, 1.0, 0.0005)
    assert (cfg.optim.name, cfg.optim.lr, list(cfg.optim.betas), cfg.optim.weight_decay) == (
        "adam", 3.5e-4, [0.9, 0.999], 5e-4)
    assert (cfg.optim.schedule, list(cfg.optim.milestones), cfg.optim.gamma) == ("multi_step", [40, 70], 0.1)
    assert (cfg.optim.warmup_epochs, cfg.optim.warmup_start_factor, cfg.optim.center_lr) == (10, 0.01, 0.5)
    assert (cfg.train.epochs, cfg.train.fixbase_epochs) == (120, 0)
    assert (cfg.eval.metric, cfg.eval.rerank, cfg.eval.every) == ("cosine", False, 40)


def test_preset_model_builds_as_bot() -> None:
    cfg = load_config("market1501_bot")
    model = build_model(cfg.model.name, num_classes=751, backbone=cfg.model.backbone, **to_dict(cfg.model.options))
    assert model.feature_dim == 2048 and model.global_classifier.weight.shape == (751, 2048)
    assert not hasattr(model, "global_bottleneck") and model.global_stage4[0].conv2.stride == (1, 1)


def test_center_settings_are_checked_by_name() -> None:
    with pytest.raises(ConfigError, match=r"loss\.center_weight must be at least 0"):
        load_config(None, ["loss.center_weight=-1"])
    with pytest.raises(ConfigError, match=r"optim\.center_lr must be positive"):
        load_config(None, ["optim.center_lr=0"])


@pytest.mark.slow
def test_resume_with_the_center_loss_is_bit_identical(synthetic_root: Path, random_trunk: Path,
                                                      tmp_path: Path) -> None:
    from test_trainer import EPOCHS, tiny_run

    from igoas.artifacts.checkpoint import load_checkpoint
    from igoas.training.trainer import train

    center = ("loss.center_weight=0.0005", "loss.triplet=margin", "data.sampler=identity", "data.num_instances=2",
              "model.name=baseline", "model.occlusion=none", "model.options={neck: bnneck, extra_bottleneck: false}")
    reference_dir, out = tmp_path / "uninterrupted", tmp_path / "interrupted"
    assert train(tiny_run(synthetic_root, random_trunk, reference_dir, *center)).finished
    stopped = train(tiny_run(synthetic_root, random_trunk, out, *center, "train.stop_after_iters=6"))
    assert not stopped.finished
    saved = load_checkpoint(out / "checkpoints/last.pth")
    start = CenterState(saved["center_loss"]["centers"]["centers"].shape[0], 512, 0.0005, 0.5, seed=1)
    assert not torch.equal(saved["center_loss"]["centers"]["centers"], start.module.centers)  # the centers moved
    with pytest.raises(ConfigError, match=r"loss\.center_weight"):
        train(resume=out, overrides=["loss.center_weight=0.001"])
    assert train(resume=out).finished
    reference, resumed = (load_checkpoint(run / "checkpoints/last.pth") for run in (reference_dir, out))
    assert resumed["iteration"] == reference["iteration"] and resumed["epoch"] == reference["epoch"] == EPOCHS
    assert torch.equal(reference["center_loss"]["centers"]["centers"], resumed["center_loss"]["centers"]["centers"])
    for key, tensor in reference["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    assert resumed["metrics"] == reference["metrics"]
