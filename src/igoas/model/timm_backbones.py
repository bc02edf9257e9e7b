"""ReID trunks built through `timm.create_model` by name: ResNet/ResNeXt, ConvNeXt, ViT, Swin.

Each trunk is re-shaped for person ReID the way the field's published recipes do it:
convolutional nets get a stride-1 last stage (a 256x128 input keeps a 16x8 map instead of
8x4), ViTs get TransReID's overlapping patch embedding (the 16x16 patch conv moves by
`patch_stride` pixels) with the position embedding resampled to the ReID input's patch
grid, and Swin is built for the ReID input size through timm's `img_size`. None of these
changes a weight's shape except the ViT position embedding, so ImageNet weights (timm's
own, or a local file) load with only that one key adapted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from igoas.model.heads import POOLING
from igoas.model.pretrained import load_trunk_state, read_state_dict
from igoas.utils.errors import CheckpointError, ConfigError

DEFAULT_INPUT_SIZE = (256, 128)  # the ReID input (height, width) ViT and Swin are built for

# Prefix of an igoas network's trunk keys (a `TimmBaseline` checkpoint), stripped when such a file is loaded.
NETWORK_TRUNK_PREFIX = "trunk.model."


@dataclass(frozen=True)
class TimmBackbone:
    """One backbone: timm's model name and the family that says how to re-shape it."""

    timm_name: str
    family: str  # "resnet", "convnext", "vit" or "swin"


# igoas names; a timm name that igoas also builds with torchvision (resnet50, resnet101) takes
# a `timm:` prefix, so the torchvision trunks keep their names (the published IGOAS uses them).
TIMM_BACKBONES: dict[str, TimmBackbone] = {
    "timm:resnet50": TimmBackbone("resnet50", "resnet"),
    "timm:resnet101": TimmBackbone("resnet101", "resnet"),
    "resnext50_32x4d": TimmBackbone("resnext50_32x4d", "resnet"),
    "convnext_tiny": TimmBackbone("convnext_tiny", "convnext"),
    "vit_small_patch16_224": TimmBackbone("vit_small_patch16_224", "vit"),
    "vit_base_patch16_224": TimmBackbone("vit_base_patch16_224", "vit"),
    "swin_tiny_patch4_window7_224": TimmBackbone("swin_tiny_patch4_window7_224", "swin"),
}


# ------------------------------------------------------------------ re-shaping per family
def _stride_one_resnet(model: nn.Module) -> None:
    """The last stage's first block stops down-sampling: its strided 3x3 conv and its
    shortcut's 1x1 conv get stride 1 (BoT / fast-reid's `last_stride=1`)."""
    for module in model.layer4[0].modules():
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (1, 1)


def _pad_right_bottom(conv: nn.Conv2d, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Pad kernel-1 pixels right and below, so a stride-1 conv with an even kernel keeps the size."""
    kernel_h, kernel_w = conv.kernel_size
    return (F.pad(inputs[0], (0, kernel_w - 1, 0, kernel_h - 1)), *inputs[1:])


def _stride_one_convnext(model: nn.Module) -> None:
    """The last stage's 2x2 downsample conv gets stride 1 (and a one-pixel pad so the map
    keeps its size); a forward pre-hook, not a new module, so the state-dict keys stay timm's."""
    conv = next(m for m in model.stages[-1].downsample.modules() if isinstance(m, nn.Conv2d))
    conv.stride = (1, 1)
    conv.register_forward_pre_hook(_pad_right_bottom)


def overlapping_grid(input_size: tuple[int, int], patch_size: tuple[int, int],
                     patch_stride: int) -> tuple[int, int]:
    """Patch grid of a `patch_size` conv moving `patch_stride` pixels (TransReID: 256x128,
    16x16 patches, stride 12 -> 21 x 10); pixels left over at the border are not covered."""
    return tuple((size - patch) // patch_stride + 1 for size, patch in zip(input_size, patch_size))  # type: ignore[return-value]


def _overlapping_patches(model: nn.Module, input_size: tuple[int, int], patch_stride: int) -> None:
    """TransReID's patch embedding: the conv keeps its 16x16 kernel (and weights) but moves
    `patch_stride` pixels, so neighbouring patches overlap and there are more of them; the
    position embedding is resampled from the model's grid to the new one."""
    embed = model.patch_embed
    if patch_stride < 1 or patch_stride > min(embed.patch_size):
        raise ConfigError(f"patch_stride={patch_stride} must be between 1 and the patch size {embed.patch_size[0]} "
                          "(12 with 16x16 patches is TransReID's overlap; the patch size means no overlap)")
    if any(size < patch for size, patch in zip(input_size, embed.patch_size)):
        raise ConfigError(f"input_size={tuple(input_size)} is smaller than one {embed.patch_size} patch")
    old_grid, grid = tuple(embed.grid_size), overlapping_grid(input_size, embed.patch_size, patch_stride)
    embed.proj.stride = (patch_stride, patch_stride)
    embed.img_size, embed.grid_size, embed.num_patches = tuple(input_size), grid, grid[0] * grid[1]
    model.pos_embed = nn.Parameter(resample_abs_pos_embed(model.pos_embed.detach(), new_size=list(grid),
                                                          old_size=list(old_grid),
                                                          num_prefix_tokens=_prefix_tokens(model)))


def _prefix_tokens(model: nn.Module) -> int:
    """Tokens before the patches in the position embedding (the class token; 0 if it has none)."""
    return 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens


def swin_sizes(depths: int, patch: int, window: int, limit: int = 1024) -> list[int]:
    """Input heights/widths up to `limit` whose map at every stage is whole and either a
    multiple of the window or no larger than it (timm then shrinks the window to the map)."""
    def fits(size: int) -> bool:
        maps = [size / (patch * 2 ** stage) for stage in range(depths)]
        return all(m.is_integer() and (m % window == 0 or m <= window) for m in maps)

    return [size for size in range(patch, limit + 1, patch) if fits(size)]


def _check_swin_size(backbone: str, input_size: tuple[int, int]) -> None:
    """Refuse a size whose maps do not split into whole windows (timm would pad silently)."""
    patch, window, depths = _swin_geometry(backbone)
    valid = swin_sizes(depths, patch, window)
    bad = [size for size in input_size if size not in valid]
    if bad:
        raise ConfigError(
            f"input_size={tuple(input_size)} does not fit {backbone}: every stage's map must split into whole "
            f"{window}x{window} windows; valid heights and widths up to 1024 are {', '.join(map(str, valid))} "
            f"(e.g. input_size=[{valid[0]}, {valid[0]}])")


def _swin_geometry(backbone: str) -> tuple[int, int, int]:
    """(patch size, window size, number of stages) of a Swin, read from its timm name
    (`swin_tiny_patch4_window7_224`), so checking a size needs no model."""
    name = TIMM_BACKBONES[backbone].timm_name
    patch = int(name.split("patch")[1].split("_")[0])
    window = int(name.split("window")[1].split("_")[0])
    return patch, window, 4


# ------------------------------------------------------------------ weights
def _create(backbone: str, pretrained: bool, **kwargs: object) -> nn.Module:
    """timm's model without its classifier; `pretrained=True` fetches timm's default weights."""
    name = TIMM_BACKBONES[backbone].timm_name
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except Exception as err:
        if not pretrained:
            raise
        raise CheckpointError(
            f"could not fetch timm's pretrained weights for {name} ({type(err).__name__}: {err}). Without "
            f"network, save timm.create_model({name!r}, pretrained=True).state_dict() with torch.save where "
            "there is network and pass that file (pretrained='path/to/file.pth' or model.pretrained=PATH)"
        ) from err


def load_timm_state(model: nn.Module, family: str, path: Path) -> None:
    """Load a local timm/torch state dict into `model`, strictly, after the ReID key
    adaptation: the ImageNet classifier is dropped and a ViT position embedding saved for
    another (square) patch grid is resampled to the model's grid."""
    state = read_state_dict(path)
    if any(key.startswith(NETWORK_TRUNK_PREFIX) for key in state):
        state = {k[len(NETWORK_TRUNK_PREFIX):]: v for k, v in state.items() if k.startswith(NETWORK_TRUNK_PREFIX)}
    if family == "vit" and "pos_embed" in state:
        state["pos_embed"] = _resampled_pos_embed(model, state["pos_embed"], path)
    classifier = model.pretrained_cfg.get("classifier") or "head"
    expect = f"a timm-format state dict of {model.pretrained_cfg.get('architecture', type(model).__name__)}"
    load_trunk_state(model, state, str(path), classifier=f"{classifier}.", expect=expect,
                     shape_hint=f"is it another model or size? Pass {expect}")


def _resampled_pos_embed(model: nn.Module, saved: Tensor, path: Path) -> Tensor:
    """`saved` on the model's patch grid: as is when it already is, else resampled from the
    square grid timm models are saved on (224x224 / 16 = 14 x 14)."""
    if saved.shape == model.pos_embed.shape:
        return saved
    prefix = _prefix_tokens(model)
    patches = saved.shape[1] - prefix
    side = math.isqrt(patches)
    if saved.dim() != 3 or side * side != patches or saved.shape[2] != model.pos_embed.shape[2]:
        raise CheckpointError(
            f"pretrained weights {path}: pos_embed has shape {tuple(saved.shape)}, which is neither this model's "
            f"{tuple(model.pos_embed.shape)} nor a square patch grid of width {model.pos_embed.shape[2]} that could be "
            "resampled; pass a timm state dict of the same ViT saved at its native size or at this input size and stride")
    return resample_abs_pos_embed(saved, new_size=list(model.patch_embed.grid_size), old_size=[side, side],
                                  num_prefix_tokens=prefix)


# ------------------------------------------------------------------ the trunk
class TimmTrunk(nn.Module):
    """A timm backbone re-shaped for ReID, with a pooled global feature of `feature_dim`.

    `forward_map` gives the last feature map (B x C x h x w) for the convolutional nets and
    Swin, and the token sequence (B x N x C, class token first) for a ViT; `pool` turns it
    into the global feature: `pooling` ("avg" or "max") over the map, the class token for a
    ViT (TransReID's global feature). `mean`/`std` are the normalisation timm's weights
    expect (ViT's augreg weights use 0.5, not ImageNet's statistics).
    """

    def __init__(self, backbone: str, pretrained: bool | str | Path = False,
                 input_size: tuple[int, int] = DEFAULT_INPUT_SIZE, patch_stride: int | None = None,
                 pooling: str = "avg") -> None:
        super().__init__()
        if backbone not in TIMM_BACKBONES:
            raise ConfigError(f"unknown timm backbone {backbone!r}; choose one of {sorted(TIMM_BACKBONES)}")
        if pooling not in POOLING:
            raise ConfigError(f"unknown pooling {pooling!r}; choose one of {sorted(POOLING)}")
        input_size = tuple(int(size) for size in input_size)
        if len(input_size) != 2 or min(input_size) < 1:
            raise ConfigError(f"input_size must be [height, width] in pixels, got {list(input_size)}")
        family = TIMM_BACKBONES[backbone].family
        if patch_stride is not None and family != "vit":
            raise ConfigError(f"patch_stride is the ViT patch embedding's stride; {backbone} has no patch embedding")
        if pretrained is not False and pretrained is not None and not isinstance(pretrained, bool):
            path = Path(pretrained)
            if path.suffix == "" and not path.exists():
                raise ConfigError(f"pretrained={str(pretrained)!r} for {backbone}: a timm backbone takes true "
                                  "(timm's default weights, fetched from the hub), false, or the path of a "
                                  "local .pth/.safetensors state dict")
        from_hub = pretrained is True
        if family == "swin":
            _check_swin_size(backbone, input_size)
            model = _create(backbone, from_hub, img_size=input_size)
        else:
            model = _create(backbone, from_hub)
        if family == "resnet":
            _stride_one_resnet(model)
        elif family == "convnext":
            _stride_one_convnext(model)
        elif family == "vit":
            _overlapping_patches(model, input_size, patch_stride or model.patch_embed.patch_size[0])
        if not isinstance(pretrained, bool) and pretrained is not None:
            load_timm_state(model, family, Path(pretrained))
        self.model = model
        self.backbone, self.family, self.input_size = backbone, family, input_size
        self.feature_dim: int = model.num_features
        self.has_map = family != "vit"
        self.mean = tuple(model.pretrained_cfg["mean"])
        self.std = tuple(model.pretrained_cfg["std"])
        self._pool = POOLING[pooling]

    def forward_map(self, images: Tensor) -> Tensor:
        """The last feature map (B x C x h x w), or a ViT's tokens after the final norm (B x N x C)."""
        features = self.model.forward_features(images)
        return features.permute(0, 3, 1, 2) if self.family == "swin" else features  # timm's Swin is NHWC

    def pool(self, features: Tensor) -> Tensor:
        """B x feature_dim: the pooled map, or a ViT's class token."""
        return features[:, 0] if self.family == "vit" else self._pool(features)

    def forward(self, images: Tensor) -> Tensor:
        return self.pool(self.forward_map(images))
