"""The published presets reproduce the authors' logged run: each switch, its default in the
presets, and the behaviour it selects (docs/REPRODUCE.md section 4)."""
from __future__ import annotations

import pytest
import torch
import torchvision

from igoas import speed
from igoas.config import load_config, to_dict
from igoas.errors import CheckpointError, ConfigError
from igoas.model import build_model
from igoas.occlusion import build_occlusion

# The presets that train the paper's IGOAS numbers; all share the Occluded-Duke recipe.
PUBLISHED = ("occluded_duke_igoas", "market1501_igoas", "dukemtmcreid_igoas", "occluded_reid_igoas",
             "occluded_reid_half_igoas")


def _occlusion_of(preset: str):
    cfg = load_config(preset)
    return build_occlusion(cfg.model.occlusion, **to_dict(cfg.model.occlusion_options))


# ------------------------------------------------------------------ 1. ImageNet weights
@pytest.mark.parametrize("preset", PUBLISHED)
def test_published_presets_use_imagenet1k_v1(preset: str) -> None:
    assert load_config(preset).model.pretrained == "imagenet1k_v1"


@pytest.fixture
def requested_weights(monkeypatch) -> list[str]:
    """Record which torchvision weight set a build asks for, without any download."""
    asked: list[str] = []

    def fake_get_state_dict(weights, *args, **kwargs):
        asked.append(str(weights))
        return torchvision.models.resnet18(weights=None).state_dict()

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", fake_get_state_dict)
    monkeypatch.setattr(torchvision.models.ResNet50_Weights, "get_state_dict", fake_get_state_dict)
    return asked


def test_pretrained_names_and_the_true_alias(requested_weights: list[str]) -> None:
    for pretrained in (True, "imagenet1k_v1", "IMAGENET1K_V1"):
        build_model("baseline", 3, pretrained=pretrained, backbone="resnet18")
    assert requested_weights == ["ResNet18_Weights.IMAGENET1K_V1"] * 3
    with pytest.raises(CheckpointError, match="resnet18 has no torchvision weights 'imagenet1k_v2'.*imagenet1k_v1"):
        build_model("baseline", 3, pretrained="imagenet1k_v2", backbone="resnet18")


def test_resnet50_v2_is_a_separate_choice() -> None:
    from igoas.model.pretrained import torchvision_weights

    assert torchvision_weights("resnet50", "imagenet1k_v1").url.endswith("resnet50-0676ba61.pth")
    assert torchvision_weights("resnet50", "imagenet1k_v2").url.endswith("resnet50-11ad3fa6.pth")


def test_offline_error_names_the_file_and_where_to_place_it(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.ResNet50_Weights, "get_state_dict", offline)
    with pytest.raises(CheckpointError) as info:
        build_model("igoas", 3, pretrained="imagenet1k_v1")
    message = str(info.value)
    cache_file = f"{torch.hub.get_dir()}/checkpoints/resnet50-0676ba61.pth"
    assert "IMAGENET1K_V1" in message and cache_file in message and "pretrained='path/to/resnet50-0676ba61.pth'" in message


def test_unknown_weight_set_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="imagenet1k_v1 or imagenet1k_v2"):
        load_config("occluded_duke_igoas", ["model.pretrained=imagenet21k"])


# ------------------------------------------------------------------ 2. IGO fill
@pytest.mark.parametrize("preset", PUBLISHED + ("occluded_duke_no_osm",))
def test_published_presets_use_the_authors_igo_fill(preset: str) -> None:
    occlusion = _occlusion_of(preset)
    assert type(occlusion).__name__ == "IGO" and occlusion.fill == "normalized"


def test_paper_fill_is_a_switch() -> None:
    cfg = load_config("occluded_duke_igoas", ["model.occlusion_options.fill=pixel"])
    assert build_occlusion(cfg.model.occlusion, **to_dict(cfg.model.occlusion_options)).fill == "pixel"


# ------------------------------------------------------------------ 3. precision
@pytest.mark.parametrize("preset", PUBLISHED)
def test_published_presets_train_and_evaluate_in_tf32(preset: str) -> None:
    cfg = load_config(preset)
    assert (cfg.train.precision, cfg.eval.precision) == ("tf32", "tf32")


def test_other_runs_keep_auto_precision() -> None:
    assert load_config().train.precision == "auto"
    assert load_config("synthetic_demo").train.precision == "auto"


@pytest.fixture
def tf32_switches():
    """torch's two TF32 switches (plain settings, usable without a GPU), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _switches() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_tf32_is_fp32_on_cpu_and_sets_the_cuda_switches(tf32_switches) -> None:
    assert speed.resolve_precision("tf32", "cpu") == "fp32"
    assert speed.resolve_precision("tf32", "cuda") == "tf32"
    assert not speed.grad_scaler("cpu", "tf32").is_enabled()
    a = torch.randn(4, 4)
    with speed.autocast("cpu", "tf32"):
        assert (a @ a).dtype == torch.float32
    speed.set_tf32("cuda", "fp32")
    assert _switches() == (False, False)
    with speed.autocast("cuda", "tf32"):
        assert _switches() == (True, True)
    assert _switches() == (False, False)
    speed.set_tf32("cuda", "tf32")
    assert _switches() == (True, True)
    speed.set_tf32("cpu", "fp32")  # a CPU run leaves the CUDA switches alone
    assert _switches() == (True, True)


# ------------------------------------------------------------------ 5. Partial-REID queries
def test_partial_reid_queries_are_the_authors_folder() -> None:
    cfg = load_config("occluded_reid_igoas")
    assert to_dict(cfg.data.target_options)["partial_reid"] == {"query_folder": "occluded_body_images"}


# ------------------------------------------------------------------ 7. evaluation schedule
def test_published_preset_evaluates_at_the_logged_epochs() -> None:
    from igoas.engine.trainer import evaluation_due
    from igoas.reproduce import OCCLUDED_DUKE_TRAJECTORY

    cfg = load_config("occluded_duke_igoas")
    due = [e for e in range(1, cfg.train.epochs + 1)
           if evaluation_due(e, cfg.train.epochs, cfg.eval.every, cfg.eval.also_every)]
    assert due == [e for e in OCCLUDED_DUKE_TRAJECTORY if e <= cfg.train.epochs]
    # the logged 120-epoch run: every evaluation it printed, and nothing else
    assert [e for e in range(1, 121) if evaluation_due(e, 120, 4, 10)] == list(OCCLUDED_DUKE_TRAJECTORY)
    assert load_config().eval.also_every == 0
