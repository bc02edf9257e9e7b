"""`Preprocess`: the input recipe a model was evaluated with (size, mean/std, interpolation).

The recipe travels inside every checkpoint (`preprocess` entry) and exported file, so a
user never has to know the input size or the mean/std. `Preprocess.resolve` derives it
from whatever is at hand (a checkpoint, a run config, a `ReIDModel`), the way timm's
`resolve_data_config` derives input settings from a model. The record and the constants
import without torch (config.py reads its defaults from here); the pixel work lives in
`igoas.imaging.images` and is loaded when first used.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

from igoas.utils.errors import CheckpointError, IgoasError

INTERPOLATION = "bilinear"  # the resize of the data pipeline, recorded in checkpoints' `preprocess`

if TYPE_CHECKING:
    import torch

    from igoas.imaging.images import ImageInput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATION_NAMES = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class Preprocess:
    """Resize to the network's input size, scale to [0, 1], subtract mean and divide by std."""

    height: int
    width: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = INTERPOLATION

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATION_NAMES:
            raise IgoasError(
                f"unknown interpolation {self.interpolation!r}; choose one of {list(INTERPOLATION_NAMES)}"
            )
        if not (self.height >= 1 and self.width >= 1):
            raise IgoasError(f"input size {self.height}x{self.width}: height and width must be at least 1 pixel")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise IgoasError(f"mean {list(self.mean)} and std {list(self.std)} need one value per colour channel")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)) or not all(v > 0 for v in self.std):
            raise IgoasError(f"mean {list(self.mean)} must be finite and std {list(self.std)} finite and positive "
                             "(the pixels are divided by std)")

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | None, source: str = "checkpoint") -> "Preprocess":
        """Read a checkpoint's `preprocess` entry, naming the source when it is missing or malformed."""
        if not isinstance(entry, Mapping):
            raise CheckpointError(
                f"{source}: no 'preprocess' entry (input size, mean, std), so the model cannot be used for "
                "inference safely; re-save it with igoas, or build Preprocess(height, width, mean, std) yourself"
            )
        try:
            return cls(
                height=int(entry["height"]),
                width=int(entry["width"]),
                mean=tuple(float(v) for v in entry["mean"]),
                std=tuple(float(v) for v in entry["std"]),
                interpolation=str(entry.get("interpolation", INTERPOLATION)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(
                f"{source}: malformed 'preprocess' entry {dict(entry)!r} ({err!r}); it needs height, width, "
                "mean (3 values), std (3 values) and optionally interpolation"
            ) from None
        except IgoasError as err:
            raise CheckpointError(f"{source}: its 'preprocess' entry cannot be used: {err}; the file is damaged or "
                                  "was edited: re-save it with igoas, or use another checkpoint") from None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Preprocess":
        """The evaluation input of a run config (its `data` section): what training records."""
        data = cfg.data
        return cls(int(data.height), int(data.width), tuple(float(v) for v in data.mean),
                   tuple(float(v) for v in data.std), INTERPOLATION)

    @classmethod
    def resolve(cls, source: "PreprocessSource", name: str = "checkpoint") -> "Preprocess":
        """The recipe of `source`: a Preprocess, a model carrying one (`preprocess_config`), a
        checkpoint payload (its `preprocess` entry) or a run config (its `data` section)."""
        if isinstance(source, cls):
            return source
        if isinstance(getattr(source, "preprocess_config", None), cls):
            return source.preprocess_config
        if hasattr(source, "data"):
            return cls.from_config(source)
        if isinstance(source, Mapping) and "height" in source:
            return cls.from_dict(source, name)
        return cls.from_dict(source.get("preprocess") if isinstance(source, Mapping) else None, name)

    def to_dict(self) -> dict[str, Any]:
        """The plain-dict form stored in checkpoints and exported files."""
        entry = asdict(self)
        entry["mean"], entry["std"] = list(self.mean), list(self.std)
        return entry

    def resize(self, image: "ImageInput") -> "torch.Tensor":
        """One image resized to the input size, as a 3 x H x W float tensor in [0, 1] (not normalised)."""
        from igoas.imaging.images import image_to_tensor, resize_image, to_unit_float

        return to_unit_float(resize_image(image_to_tensor(image), self.height, self.width, self.interpolation))

    def prepare(self, image: "torch.Tensor") -> "torch.Tensor":
        """A decoded 3 x H x W image (uint8, or float in [0, 1]) as normalised network input.

        uint8 goes through the evaluation transforms' own arithmetic (`NormalizeToFloat`),
        so every entry point gives the network the very values evaluation gives it.
        """
        import torch

        from igoas.imaging.images import normalizer, resize_image, to_unit_float

        resized = resize_image(image, self.height, self.width, self.interpolation)
        if resized.dtype == torch.uint8:
            return normalizer(self.mean, self.std)(resized)
        return self.normalize(to_unit_float(resized)[None])[0]

    def normalize(self, batch: "torch.Tensor") -> "torch.Tensor":
        """Subtract the mean and divide by the std, per channel, of a B x 3 x H x W batch in [0, 1]."""
        import torch

        mean = torch.tensor(self.mean, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
        return (batch - mean) / std

    def __call__(self, images: "ImageInput | Sequence[ImageInput]") -> "torch.Tensor":
        """Any accepted input (one image, a batch or a list) as a normalised B x 3 x H x W float32 batch."""
        import torch

        from igoas.imaging.images import image_to_tensor, split_images

        items = split_images(images)
        if not items:
            return torch.empty(0, 3, self.height, self.width)
        return torch.stack([self.prepare(image_to_tensor(item)) for item in items])


# What `Preprocess.resolve` reads a recipe from: the recipe itself, a checkpoint payload or
# a run config (an OmegaConf DictConfig is a Mapping).
PreprocessSource = Union[Preprocess, Mapping[str, Any]]
