"""Backbones through timm (stride-1 conv nets, overlapping-patch ViTs, Swin) and ResNet-IBN-a.

Nothing here downloads: every trunk is randomly initialised, and local weight files are
state dicts of randomly initialised timm models saved to a temporary folder.
"""
from __future__ import annotations

import math

import pytest
import timm
import torch
from omegaconf import OmegaConf
from timm.layers import resample_abs_pos_embed

from igoas.config import BACKBONE_NAMES, RunConfig, validate
from igoas.model import build_model
from igoas.model.backbone import BACKBONES
from igoas.model.ibn import IBN, resnet50_ibn_a, resnet101_ibn_a
from igoas.model.losses import LossConfig, compute_losses
from igoas.model.timm_backbones import TIMM_BACKBONES, TimmTrunk, overlapping_grid, swin_sizes
from igoas.utils.errors import CheckpointError, ConfigError

VIT_S = "vit_small_patch16_224"


def _images(batch: int, size: tuple[int, int]) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------ ResNet-50-IBN-a
def _ibn_a_reference_shapes(layers: list[int]) -> dict[str, tuple[int, ...]]:
    """The published ResNet-IBN-a state-dict layout (IBN-Net / fast-reid `resnet_ibn_a`),
    written out from the architecture: 7x7 stem; bottlenecks (1x1, 3x3, 1x1, expansion 4)
    whose bn1 is IBN (IN on the first half of the channels, BN on the rest) in stages 1-3;
    a 1x1 conv + BN shortcut in each stage's first block; the 1000-way classifier."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(name: str, channels: int) -> None:
        shapes.update({f"{name}.weight": (channels,), f"{name}.bias": (channels,), f"{name}.running_mean": (channels,),
                       f"{name}.running_var": (channels,), f"{name}.num_batches_tracked": ()})

    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for index in range(blocks):
            prefix = f"layer{stage}.{index}"
            shapes[f"{prefix}.conv1.weight"] = (planes, inplanes, 1, 1)
            if stage <= 3:
                half = planes // 2
                shapes.update({f"{prefix}.bn1.IN.weight": (half,), f"{prefix}.bn1.IN.bias": (half,)})
                bn(f"{prefix}.bn1.BN", planes - half)
            else:
                bn(f"{prefix}.bn1", planes)
            shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{prefix}.bn2", planes)
            shapes[f"{prefix}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{prefix}.bn3", planes * 4)
            if index == 0:
                shapes[f"{prefix}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{prefix}.downsample.1", planes * 4)
            inplanes = planes * 4
    shapes.update({"fc.weight": (1000, 2048), "fc.bias": (1000,)})
    return shapes


def test_resnet50_ibn_a_has_the_published_parameter_count_and_layout() -> None:
    with torch.device("meta"):
        model = resnet50_ibn_a()
    assert _count(model) == 25_557_032
    reference = _ibn_a_reference_shapes([3, 4, 6, 3])
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == reference
    assert sum(math.prod(shape) for key, shape in reference.items()
               if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))) == 25_557_032


def test_resnet101_ibn_a_has_resnet101s_parameter_count() -> None:
    with torch.device("meta"):
        model = resnet101_ibn_a()
    assert _count(model) == 44_549_160
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == _ibn_a_reference_shapes([3, 4, 23, 3])


def test_ibn_normalises_half_the_channels_per_instance_and_half_per_batch() -> None:
    layer = IBN(8).train()
    x = torch.randn(4, 8, 5, 3) * 3 + 2
    out = layer(x)
    per_instance = out[:, :4].mean(dim=(2, 3))
    assert torch.allclose(per_instance, torch.zeros_like(per_instance), atol=1e-5)
    per_batch = out[:, 4:].mean(dim=(0, 2, 3))
    assert torch.allclose(per_batch, torch.zeros_like(per_batch), atol=1e-5)
    assert not torch.allclose(out[:, 4:].mean(dim=(2, 3)), torch.zeros(4, 4), atol=1e-3)


def test_igoas_on_ibn_a_keeps_the_authors_layer_count_and_refuses_a_torchvision_download() -> None:
    with torch.device("meta"):
        network = build_model("igoas", 702, backbone="resnet50_ibn_a")
    assert _count(network) == 51_596_640  # the ResNet-50 IGOAS count: IBN-a adds no parameters
    assert isinstance(network.layer1[0].bn1, IBN) and not isinstance(network.global_stage4[0].bn1, IBN)
    with pytest.raises(CheckpointError, match="resnet50_ibn_a has no torchvision weights"):
        build_model("baseline", 5, backbone="resnet50_ibn_a", pretrained=True)


def test_a_local_ibn_a_file_in_the_published_layout_loads(tmp_path) -> None:
    torch.manual_seed(0)
    saved = resnet50_ibn_a().state_dict()
    path = tmp_path / "resnet50_ibn_a.pth"
    torch.save(saved, path)
    network = build_model("baseline", 5, backbone="resnet50_ibn_a", pretrained=path)
    assert torch.equal(network.layer2[1].bn1.IN.weight, saved["layer2.1.bn1.IN.weight"])
    assert torch.equal(network.global_stage4[0].conv2.weight, saved["layer4.0.conv2.weight"])


# ------------------------------------------------------------------ convolutional timm trunks
@pytest.mark.parametrize("backbone, channels", [
    ("timm:resnet50", 2048), ("resnext50_32x4d", 2048), ("convnext_tiny", 768),
])
def test_conv_trunks_have_a_stride_one_last_stage(backbone: str, channels: int) -> None:
    trunk = TimmTrunk(backbone).eval()
    with torch.no_grad():
        feature_map = trunk.forward_map(_images(2, (64, 32)))
        feature = trunk.pool(feature_map)
    assert feature_map.shape == (2, channels, 4, 2)  # 64x32 / 16, not / 32: the last stage keeps the size
    assert trunk.feature_dim == channels and feature.shape == (2, channels)
    assert trunk.mean == (0.485, 0.456, 0.406)
    with torch.device("meta"):  # the ReID input: shapes only, no compute
        assert TimmTrunk(backbone).forward_map(torch.empty(1, 3, 256, 128)).shape == (1, channels, 16, 8)


def test_convnext_stride_one_downsample_keeps_its_weight_shape() -> None:
    with torch.device("meta"):
        trunk = TimmTrunk("convnext_tiny")
    conv = trunk.model.stages[3].downsample[1]
    assert conv.stride == (1, 1) and tuple(conv.weight.shape) == (768, 384, 2, 2)
    assert _count(trunk) + 768 * 1000 + 1000 == 28_589_128  # timm's convnext_tiny with its classifier


@pytest.mark.parametrize("backbone, published", [("timm:resnet101", 44_549_160), ("vit_base_patch16_224", 86_567_656),
                                                 ("swin_tiny_patch4_window7_224", 28_288_354)])
def test_large_trunks_have_the_published_parameter_count(backbone: str, published: int) -> None:
    with torch.device("meta"):
        reference = timm.create_model(TIMM_BACKBONES[backbone].timm_name, pretrained=False)
        size = (224, 224) if backbone.startswith("swin") else (256, 128)
        trunk = TimmTrunk(backbone, input_size=size)
    assert _count(reference) == published
    assert trunk.feature_dim == {"timm:resnet101": 2048}.get(backbone, 768)
    assert trunk.mean == ((0.5, 0.5, 0.5) if backbone.startswith("vit") else (0.485, 0.456, 0.406))
    classifier = trunk.feature_dim * 1000 + 1000
    extra = 0
    if backbone.startswith("vit"):  # the 256x128 grid has 16 x 8 positions instead of 14 x 14
        assert trunk.model.pos_embed.shape == (1, 16 * 8 + 1, 768)
        extra = (16 * 8 - 14 * 14) * 768
    assert _count(trunk) == published - classifier + extra


# ------------------------------------------------------------------ ViT: overlapping patches, position embedding
def test_overlapping_patches_grow_the_patch_grid() -> None:
    assert overlapping_grid((256, 128), (16, 16), 12) == (21, 10)  # TransReID's 210 patches
    trunk = TimmTrunk(VIT_S, input_size=(128, 64), patch_stride=12).eval()
    conv = trunk.model.patch_embed.proj
    assert conv.kernel_size == (16, 16) and conv.stride == (12, 12)
    with torch.no_grad():
        tokens = trunk.forward_map(_images(2, (128, 64)))
    assert tokens.shape == (2, 10 * 5 + 1, 384)  # (128-16)/12+1 x (64-16)/12+1 patches + the class token
    assert torch.equal(trunk.pool(tokens), tokens[:, 0]) and trunk.feature_dim == 384
    assert trunk.mean == (0.5, 0.5, 0.5) and not trunk.has_map


@pytest.fixture(scope="module")
def vit_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model(VIT_S, pretrained=False).state_dict()  # native 224x224: 14 x 14 positions


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_vit_weights_get_their_position_embedding_resampled(vit_state, tmp_path, suffix: str) -> None:
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(vit_state, str(path))
    else:
        torch.save(vit_state, path)
    trunk = TimmTrunk(VIT_S, pretrained=path, input_size=(128, 64), patch_stride=12)
    expected = resample_abs_pos_embed(vit_state["pos_embed"], new_size=[10, 5], old_size=[14, 14], num_prefix_tokens=1)
    assert torch.equal(trunk.model.pos_embed, expected)
    assert torch.equal(trunk.model.patch_embed.proj.weight, vit_state["patch_embed.proj.weight"])  # kept 16x16
    assert torch.equal(trunk.model.blocks[3].attn.qkv.weight, vit_state["blocks.3.attn.qkv.weight"])


@pytest.mark.slow  # about 2-3 s on two busy cores
def test_local_weight_errors_name_the_file_and_the_fix(vit_state, tmp_path) -> None:
    def trunk_from(state: dict[str, torch.Tensor], name: str) -> None:
        path = tmp_path / name
        torch.save(state, path)
        TimmTrunk(VIT_S, pretrained=path, input_size=(128, 64))

    with pytest.raises(CheckpointError, match="missing.pth does not exist"):
        TimmTrunk(VIT_S, pretrained=tmp_path / "missing.pth")
    dropped = {k: v for k, v in vit_state.items() if k != "blocks.0.norm1.weight"}
    with pytest.raises(CheckpointError, match=r"dropped.pth do not match.*missing keys blocks.0.norm1.weight.*"
                                              r"unexpected keys none. Pass a timm-format state dict of vit_small"):
        trunk_from(dropped, "dropped.pth")
    with pytest.raises(CheckpointError, match="extra.pth do not match.*unexpected keys extra.weight"):
        trunk_from({**vit_state, "extra.weight": torch.zeros(1)}, "extra.pth")
    with pytest.raises(CheckpointError, match="wrong.pth have wrong shapes for cls_token; is it another model"):
        trunk_from({**vit_state, "cls_token": torch.zeros(1, 1, 7)}, "wrong.pth")
    with pytest.raises(CheckpointError, match=r"grid.pth: pos_embed has shape \(1, 131, 384\), which is neither"):
        trunk_from({**vit_state, "pos_embed": torch.zeros(1, 131, 384)}, "grid.pth")
    with pytest.raises(ConfigError, match="a timm backbone takes true"):
        TimmTrunk(VIT_S, pretrained="imagenet1k_v1")


def test_patch_stride_and_input_size_are_checked() -> None:
    with pytest.raises(ConfigError, match="patch_stride=20 must be between 1 and the patch size 16"):
        TimmTrunk(VIT_S, input_size=(128, 64), patch_stride=20)
    with pytest.raises(ConfigError, match="patch_stride is the ViT patch embedding's stride"):
        TimmTrunk("timm:resnet50", patch_stride=12)


# ------------------------------------------------------------------ Swin
def test_swin_refuses_sizes_that_do_not_split_into_windows_and_names_valid_ones() -> None:
    assert swin_sizes(4, 4, 7, limit=700) == [224, 448, 672]
    with pytest.raises(ConfigError, match=r"input_size=\(256, 128\) does not fit .*whole 7x7 windows; valid heights "
                                          r"and widths up to 1024 are 224, 448, 672, 896"):
        TimmTrunk("swin_tiny_patch4_window7_224", input_size=(256, 128))


def test_swin_at_a_window_divisible_size() -> None:
    trunk = TimmTrunk("swin_tiny_patch4_window7_224", input_size=(448, 224)).eval()
    with torch.no_grad():
        feature_map = trunk.forward_map(_images(1, (448, 224)))
    assert feature_map.shape == (1, 768, 14, 7) and trunk.pool(feature_map).shape == (1, trunk.feature_dim)


# ------------------------------------------------------------------ build_model and the config
@pytest.mark.slow  # about 2-3 s on two busy cores
def test_vit_baseline_trains_one_step_and_rebuilds_from_its_spec() -> None:
    torch.manual_seed(0)
    model = build_model("baseline", 4, backbone=VIT_S, input_size=[128, 64], patch_stride=12).train()
    images, labels = _images(8, (128, 64)), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    before = compute_losses(model(images), labels, LossConfig())
    optimizer.zero_grad()
    before.total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer.step()
    with torch.no_grad():
        after = compute_losses(model(images), labels, LossConfig())
    assert after.total.item() < before.total.item()
    embedding = model.eval()(images)
    assert embedding.shape == (8, 512) and torch.allclose(embedding.norm(dim=1), torch.ones(8))
    again = build_model(**model.spec)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "igoas", "backbone": VIT_S}, r"model 'igoas' is built on ResNet stages and supports the backbones "
                                           r"\['resnet101', 'resnet101_ibn_a', 'resnet18'"),
    ({"name": "baseline", "backbone": VIT_S, "extra_bottleneck": False}, r"unknown model option\(s\) "
                                                                         r"\['extra_bottleneck'\].*on vit_small"),
    ({"name": "baseline", "backbone": VIT_S, "occlusion": "batch_dropblock"}, "acts on a feature map"),
    ({"name": "baseline", "backbone": "vgg16"}, "unknown backbone 'vgg16'"),
])
def test_build_model_refusals(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(num_classes=4, **{"input_size": [128, 64], **kwargs} if kwargs["backbone"] == VIT_S and
                    kwargs["name"] == "baseline" else kwargs)


def test_config_accepts_exactly_the_registered_backbones() -> None:
    assert set(BACKBONE_NAMES) == set(BACKBONES) | set(TIMM_BACKBONES)
    config = OmegaConf.structured(RunConfig)
    config.model.backbone = "convnext_tiny"
    validate(config)
    config.model.backbone = "vgg16"
    with pytest.raises(ConfigError, match="model.backbone='vgg16' is not one of"):
        validate(config)
