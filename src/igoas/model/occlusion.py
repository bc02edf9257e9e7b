"""Occlusion methods: the IGO block (SPEC section 2) and the methods the paper compares it with.

Every method is called as `method(images, progress, generator=None) -> (occluded,
visible_mask)`: `images` is a normalised batch B x C x H x W (or, for the feature-level
method, a feature map), `progress` the fractional epoch, `visible_mask` B x 1 x H x W
with 1 = visible and 0 = occluded. The input is never modified in place. Random numbers
come from `generator` (the global torch RNG when it is None), so a seeded generator
reproduces a run. `level` tells the model where the method acts: "input" (image space)
or "feature" (the stage-4 map).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from igoas.imaging.preprocess import IMAGENET_MEAN, IMAGENET_STD
from igoas.utils.errors import ConfigError, IgoasError


def igo_area_ratio(progress: float, start: float = 0.1, slope: float = 0.4 / 90, ramp_epochs: int = 55,
                   final: float = 1 / 3, granularity: str = "epoch") -> float:
    """Occluded-area ratio of the IGO rectangle at `progress` (fractional epoch, from 0).

    Easy to hard: the ratio grows linearly, `start + slope * e`, while the epoch is at most
    `ramp_epochs`, then stays at `final` (the authors' code: 0.1 + 0.4 e / 90 up to epoch
    55, then 1/3). With granularity "epoch", e = floor(progress) so the size changes once
    per epoch, as in the authors' code; with "iteration", e = progress so it grows every
    step. The switch to `final` happens after epoch `ramp_epochs` either way.
    """
    if granularity not in _GRANULARITIES:
        raise ConfigError(f"IGO schedule granularity must be one of {sorted(_GRANULARITIES)}, got {granularity!r}")
    epoch = math.floor(progress)
    if epoch > ramp_epochs:
        return final
    return start + slope * _GRANULARITIES[granularity](progress)


_GRANULARITIES: dict[str, Callable[[float], float]] = {"epoch": math.floor, "iteration": float}


@dataclass(frozen=True)
class Rectangle:
    """A region in pixel (or map) coordinates: rows top..top+height, columns left..left+width."""

    top: int
    left: int
    height: int
    width: int

    @property
    def area(self) -> int:
        return self.height * self.width


# ----------------------------------------------------------------------------- random draws
def _draw(generator: torch.Generator | None, size: Sequence[int]) -> Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.rand(tuple(size), generator=generator, device=device)


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(_draw(generator, (1,)))


def _randint(generator: torch.Generator | None, low: int, high: int) -> int:
    """Uniform integer in [low, high], both ends included."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(low, high + 1, (1,), generator=generator, device=device))


def _place(generator: torch.Generator | None, height: int, width: int, image_h: int, image_w: int) -> Rectangle:
    return Rectangle(_randint(generator, 0, image_h - height), _randint(generator, 0, image_w - width), height, width)


# ----------------------------------------------------------------------------- tensor helpers
def _fill_colour(pixel_values: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Pixel values in [0, 1] (fraction of 255), C x ..., in the normalised input space."""
    shape = (-1,) + (1,) * (pixel_values.dim() - 1)
    mean_t = torch.tensor(mean, dtype=pixel_values.dtype, device=pixel_values.device).view(shape)
    std_t = torch.tensor(std, dtype=pixel_values.dtype, device=pixel_values.device).view(shape)
    return (pixel_values - mean_t) / std_t


def _check_channels(images: Tensor, mean: Sequence[float]) -> None:
    if images.dim() != 4 or images.shape[1] != len(mean):
        raise IgoasError(f"occlusion expects a B x {len(mean)} x H x W image batch, got shape {tuple(images.shape)}; "
                         "pass mean/std with one value per channel")


def _visible_mask(images: Tensor, rectangles: Sequence[Rectangle | None]) -> Tensor:
    """B x 1 x H x W, zero inside each image's rectangle (one rectangle broadcasts to all)."""
    batch, _, height, width = images.shape
    dtype = images.dtype if images.is_floating_point() else torch.float32
    mask = torch.ones(batch, 1, height, width, dtype=dtype, device=images.device)
    if len(rectangles) == 1 and rectangles[0] is not None:
        r = rectangles[0]
        mask[:, :, r.top:r.top + r.height, r.left:r.left + r.width] = 0
        return mask
    for index, r in enumerate(rectangles):
        if r is not None:
            mask[index, :, r.top:r.top + r.height, r.left:r.left + r.width] = 0
    return mask


class Occlusion:
    """Base of every method: level, call signature, and (empty) resumable state."""

    level: str = "input"

    def __init__(self) -> None:
        # Fraction of pixels hidden by the last call, for logging (no tensor sync needed).
        self.occluded_fraction = 0.0

    def __call__(self, images: Tensor, progress: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values needed to resume exactly (empty for stateless methods)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def schedule_warning(self, epochs: int) -> str | None:
        """Why a run of `epochs` epochs would not see this method's whole schedule (None: it does)."""
        return None

    def _record(self, rectangles: Sequence[Rectangle | None], images: Tensor) -> None:
        total = images.shape[-2] * images.shape[-1] * (images.shape[0] if len(rectangles) > 1 else 1)
        self.occluded_fraction = sum(r.area for r in rectangles if r is not None) / max(total, 1)


class NoOcclusion(Occlusion):
    """Nothing hidden: the input comes back as is (same tensor) with an all-visible mask."""

    def __call__(self, images: Tensor, progress: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        self.occluded_fraction = 0.0
        return images, _visible_mask(images, [None])


class IGO(Occlusion):
    """Incremental generative occlusion: one rectangle per batch, same size and place in
    every image, area from `igo_area_ratio`, filled with one random colour per channel.

    The aspect h/w is drawn from `aspect_range`; a rectangle that does not fit is drawn
    again (the authors' code does not clip). When sqrt(area) exceeds the width the
    rectangle becomes a full-width band. `fill="normalized"` (default, the authors' code,
    which produced the published numbers) writes U(0, 1) per channel straight into the
    normalised tensor; `fill="pixel"` (the paper's text) draws each channel's value
    uniformly in [0, 255] and normalises it with `mean`/`std`.
    """

    def __init__(self, start: float = 0.1, slope: float = 0.4 / 90, ramp_epochs: int = 55,
                 final: float = 1 / 3, granularity: str = "epoch", aspect_range: Sequence[float] = (0.5, 1.0),
                 fill: str = "normalized", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, max_attempts: int = 10_000) -> None:
        super().__init__()
        if fill not in _IGO_FILLS:
            raise ConfigError(f"IGO fill must be one of {sorted(_IGO_FILLS)}, got {fill!r}")
        igo_area_ratio(0.0, granularity=granularity)  # validates the name early
        self.schedule = dict(start=start, slope=slope, ramp_epochs=ramp_epochs, final=final, granularity=granularity)
        self.aspect_range = tuple(aspect_range)
        self.fill, self.mean, self.std = fill, tuple(mean), tuple(std)
        self.max_attempts = max_attempts

    def area_ratio(self, progress: float) -> float:
        """Target fraction of the image the rectangle covers at `progress`."""
        return igo_area_ratio(progress, **self.schedule)

    def _draw_area_ratio(self, progress: float, generator: torch.Generator | None) -> float:
        return self.area_ratio(progress)

    def schedule_warning(self, epochs: int) -> str | None:
        """The ramp is in absolute epochs (the authors' 90-epoch recipe): a shorter run ends
        before the area reaches `final`, which silently makes IGO a smaller occluder."""
        ramp_epochs = self.schedule["ramp_epochs"]
        if ramp_epochs + 1 <= epochs:  # the ramp (epochs 0..ramp_epochs) ends within the run
            return None
        return (f"the IGO schedule does not fit {epochs} epochs: the occluded area grows until epoch "
                f"{ramp_epochs + 1} and reaches its final ratio {self.schedule['final']:.3f} only after it, so "
                f"this run ends at {self.area_ratio(math.nextafter(epochs, 0)):.3f}. To keep the recipe's shape "
                "at this length, "
                f"set model.occlusion_options.slope={0.4 / epochs:.6g} and "
                f"model.occlusion_options.ramp_epochs={max(round(56 * epochs / 90) - 1, 0)} (docs/model.md)")

    def rectangle(self, height: int, width: int, progress: float,
                  generator: torch.Generator | None = None) -> Rectangle:
        """Draw the batch's rectangle (size from the schedule, aspect by rejection, position)."""
        ratio = self._draw_area_ratio(progress, generator)
        area = ratio * height * width
        for _ in range(self.max_attempts):
            if math.sqrt(area) <= width:
                aspect = _uniform(generator, *self.aspect_range)
                rect_h, rect_w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            else:
                rect_h, rect_w = round(area / width), width
                if rect_h > height:
                    break  # a full-width band taller than the image never fits
            if rect_w <= width and rect_h <= height:
                return _place(generator, rect_h, rect_w, height, width)
        raise IgoasError(
            f"IGO cannot place a rectangle of area ratio {ratio:.3f} with aspect h/w in {self.aspect_range} "
            f"inside a {height}x{width} image after {self.max_attempts} draws; lower the schedule's ratios "
            "or widen aspect_range"
        )

    def __call__(self, images: Tensor, progress: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_channels(images, self.mean)
        rect = self.rectangle(images.shape[-2], images.shape[-1], progress, generator)
        colour = _IGO_FILLS[self.fill](_draw(generator, (images.shape[1],)), self.mean, self.std)
        occluded = images.clone()
        occluded[:, :, rect.top:rect.top + rect.height, rect.left:rect.left + rect.width] = (
            colour.to(images.device, images.dtype).view(1, -1, 1, 1))
        self._record([rect], images)
        return occluded, _visible_mask(images, [rect])


def _already_normalized(values: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    return values


_IGO_FILLS: dict[str, Callable[[Tensor, Sequence[float], Sequence[float]], Tensor]] = {
    "pixel": _fill_colour,
    "normalized": _already_normalized,
}


class FixedIGO(IGO):
    """IGO without the schedule (ablation of the incremental part): the area ratio is
    `area_ratio` at every step or, with `area_range=(low, high)`, drawn from U(low, high)
    once per batch before the aspect, as the authors' commented fixed-size variant
    (0.25, 0.333) does."""

    def __init__(self, area_ratio: float = 1 / 3, area_range: Sequence[float] | None = None, **options: Any) -> None:
        super().__init__(**options)
        if area_range is not None and not (len(area_range) == 2 and 0 < area_range[0] <= area_range[1] <= 1):
            raise ConfigError(f"igo_fixed area_range must be [low, high] with 0 < low <= high <= 1, got {area_range}")
        self.fixed_ratio = area_ratio
        self.area_range = None if area_range is None else tuple(area_range)

    def area_ratio(self, progress: float) -> float:
        return self.fixed_ratio if self.area_range is None else sum(self.area_range) / 2

    def _draw_area_ratio(self, progress: float, generator: torch.Generator | None) -> float:
        return self.fixed_ratio if self.area_range is None else _uniform(generator, *self.area_range)

    def schedule_warning(self, epochs: int) -> str | None:
        return None  # no schedule: every step draws the same size


def _erasing_rectangle(generator: torch.Generator | None, height: int, width: int, area_range: Sequence[float],
                       min_aspect: float, attempts: int) -> Rectangle | None:
    """Random-erasing rectangle (Zhong et al.): area fraction and aspect h/w in
    [min_aspect, 1/min_aspect] drawn until it fits strictly inside; None if it never does."""
    for _ in range(attempts):
        area = _uniform(generator, *area_range) * height * width
        aspect = _uniform(generator, min_aspect, 1 / min_aspect)
        rect_h, rect_w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if rect_w < width and rect_h < height:
            return _place(generator, rect_h, rect_w, height, width)
    return None


# What the authors' erasing code writes into the normalised tensor: the constants of
# Zhong et al.'s random-erasing code (the CIFAR-10 mean), not the ImageNet mean.
AUTHORS_ERASING_VALUE = (0.4914, 0.4822, 0.4465)
ERASING_FILLS = ("mean", "random", "normalized")


class _ErasingFill:
    """Colour of erased regions: "mean" the ImageNet mean colour (0 once normalised),
    "random" per-pixel random pixels, "normalized" the constant `normalized_value` written
    straight into the normalised tensor (the authors' code)."""

    def __init__(self, fill: str, mean: Sequence[float], std: Sequence[float],
                 normalized_value: Sequence[float]) -> None:
        if fill not in ERASING_FILLS:
            raise ConfigError(f"random erasing fill must be one of {', '.join(ERASING_FILLS)}, got {fill!r}")
        self.fill, self.mean, self.std = fill, tuple(mean), tuple(std)
        self.normalized_value = tuple(normalized_value)

    def __call__(self, generator: torch.Generator | None, shape: Sequence[int], like: Tensor) -> Tensor:
        if self.fill == "normalized":
            return torch.tensor(self.normalized_value, dtype=like.dtype, device=like.device).view(-1, 1, 1).expand(*shape)
        if self.fill == "mean":
            pixels = torch.tensor(self.mean).view(-1, 1, 1).expand(*shape)
        else:
            pixels = _draw(generator, shape)
        return _fill_colour(pixels.to(like.device, like.dtype), self.mean, self.std)


class _Erasing(Occlusion):
    """What both random-erasing methods share: the rectangle's area and aspect bounds and its fill."""

    def __init__(self, area_range: Sequence[float], min_aspect: float, fill: str, mean: Sequence[float],
                 std: Sequence[float], normalized_value: Sequence[float], max_attempts: int) -> None:
        super().__init__()
        self.area_range, self.min_aspect = tuple(area_range), min_aspect
        self.colour = _ErasingFill(fill, mean, std, normalized_value)
        self.max_attempts = max_attempts

    def _rectangle(self, generator: torch.Generator | None, height: int, width: int) -> Rectangle | None:
        return _erasing_rectangle(generator, height, width, self.area_range, self.min_aspect, self.max_attempts)


class RandomErasing(_Erasing):
    """Single-image random erasing: each image gets its own rectangle (size, aspect,
    position), with probability `probability`. Defaults follow the authors' comparison:
    area 25-50 %, aspect 0.5-2, every image. `mask="erased"` returns the erased
    rectangles as the visible mask; `mask="all_visible"` returns all ones, as the
    authors' code does (so the OSM mask loss is 0 with it)."""

    def __init__(self, probability: float = 1.0, area_range: Sequence[float] = (0.25, 0.5), min_aspect: float = 0.5,
                 fill: str = "mean", mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 normalized_value: Sequence[float] = AUTHORS_ERASING_VALUE, mask: str = "erased",
                 max_attempts: int = 100) -> None:
        super().__init__(area_range, min_aspect, fill, mean, std, normalized_value, max_attempts)
        if mask not in ("erased", "all_visible"):
            raise ConfigError(f"random erasing mask must be 'erased' or 'all_visible', got {mask!r}")
        self.probability, self.mask = probability, mask

    def __call__(self, images: Tensor, progress: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_channels(images, self.colour.mean)
        height, width = images.shape[-2:]
        occluded = images.clone()
        rectangles: list[Rectangle | None] = []
        for index in range(images.shape[0]):
            rect = None
            if _uniform(generator, 0.0, 1.0) < self.probability:
                rect = self._rectangle(generator, height, width)
            if rect is not None:
                occluded[index, :, rect.top:rect.top + rect.height, rect.left:rect.left + rect.width] = self.colour(
                    generator, (images.shape[1], rect.height, rect.width), images)
            rectangles.append(rect)
        self._record(rectangles, images)
        return occluded, _visible_mask(images, rectangles if self.mask == "erased" else [None])


class BatchRandomErasing(_Erasing):
    """Batch random erasing: one rectangle of random size (area 25-50 %) and aspect at a
    random place, the same for the whole batch, filled with the ImageNet mean colour."""

    def __init__(self, area_range: Sequence[float] = (0.25, 0.5), min_aspect: float = 0.25, fill: str = "mean",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 normalized_value: Sequence[float] = AUTHORS_ERASING_VALUE, max_attempts: int = 100) -> None:
        super().__init__(area_range, min_aspect, fill, mean, std, normalized_value, max_attempts)

    def __call__(self, images: Tensor, progress: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_channels(images, self.colour.mean)
        height, width = images.shape[-2:]
        rect = self._rectangle(generator, height, width)
        if rect is None:
            raise IgoasError(f"batch random erasing found no rectangle of area {self.area_range} and aspect "
                             f"ratio >= {self.min_aspect} inside a {height}x{width} image in {self.max_attempts} "
                             "draws; lower area_range")
        occluded = images.clone()
        occluded[:, :, rect.top:rect.top + rect.height, rect.left:rect.left + rect.width] = self.colour(
            generator, (images.shape[1], rect.height, rect.width), images).unsqueeze(0)
        self._record([rect], images)
        return occluded, _visible_mask(images, [rect])


class _BandDrop(Occlusion):
    """Zero one band of fixed size (`height_ratio` x `width_ratio` of the input) at one
    position shared by the whole batch (DropBlock as in Dai et al. 2019)."""

    def __init__(self, height_ratio: float = 0.3, width_ratio: float = 1.0) -> None:
        super().__init__()
        self.height_ratio, self.width_ratio = height_ratio, width_ratio

    def _size(self, tensor: Tensor) -> tuple[int, int]:
        return round(self.height_ratio * tensor.shape[-2]), round(self.width_ratio * tensor.shape[-1])

    def _drop(self, tensor: Tensor, rect: Rectangle) -> tuple[Tensor, Tensor]:
        mask = _visible_mask(tensor, [rect])
        self._record([rect], tensor)
        return tensor * mask, mask


class BatchDropBlock(_BandDrop):
    """Batch DropBlock on the deep feature map: the model applies it to the stage-4 map of
    the branch it occludes; a new position every batch."""

    level = "feature"

    def __call__(self, features: Tensor, progress: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        rect_h, rect_w = self._size(features)
        return self._drop(features, _place(generator, rect_h, rect_w, *features.shape[-2:]))


class SlowDropBlock(_BandDrop):
    """The DropBlock band moved to the input image; its position changes only every
    `period` iterations (the authors' code defaults to 1). Dropped pixels become 0 in the
    normalised space, i.e. the mean colour. The iteration count and held position are its
    resumable state."""

    def __init__(self, height_ratio: float = 0.3, width_ratio: float = 1.0, period: int = 1) -> None:
        super().__init__(height_ratio, width_ratio)
        if period < 1:
            raise ConfigError(f"slow_dropblock period must be >= 1 iteration, got {period}")
        self.period = period
        self.iteration = 0
        self.position: tuple[int, int] | None = None

    def __call__(self, images: Tensor, progress: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        rect_h, rect_w = self._size(images)
        height, width = images.shape[-2:]
        held = self.position
        # A held position that no longer fits (the input size changed) is drawn again.
        if self.iteration % self.period == 0 or held is None or held[0] + rect_h > height or held[1] + rect_w > width:
            rect = _place(generator, rect_h, rect_w, height, width)
            self.position = (rect.top, rect.left)
        self.iteration += 1
        return self._drop(images, Rectangle(*self.position, rect_h, rect_w))

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "position": list(self.position) if self.position else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.position = tuple(state["position"]) if state["position"] is not None else None


OCCLUSION_METHODS: dict[str, Callable[..., Occlusion]] = {
    "igo": IGO,
    "igo_fixed": FixedIGO,
    "random_erasing": RandomErasing,
    "batch_random_erasing": BatchRandomErasing,
    "slow_dropblock": SlowDropBlock,
    "batch_dropblock": BatchDropBlock,
    "none": NoOcclusion,
}


def build_occlusion(name: str, **options: Any) -> Occlusion:
    """An occlusion method by name (see OCCLUSION_METHODS) with its constructor options."""
    if name not in OCCLUSION_METHODS:
        raise ConfigError(f"unknown occlusion method {name!r}; choose one of {sorted(OCCLUSION_METHODS)}")
    try:
        return OCCLUSION_METHODS[name](**options)
    except TypeError as err:
        raise ConfigError(f"bad options {options} for occlusion method {name!r}: {err}") from err
