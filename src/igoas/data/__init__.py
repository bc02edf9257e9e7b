"""Datasets (one module per family, chosen by name from DATASETS), the synthetic occluded
set, transforms, samplers and loaders."""
from igoas.data.base import ReIDDataset, Sample, UnparsedFile, combine_train_sets, query_samples, relabel
from igoas.data.check import check_dataset
from igoas.data.image_dataset import ImageDataset, collate_skipping_failed
from igoas.data.loaders import build_test_loader, build_train_loader
from igoas.data.registry import DATASETS, PUBLISHED_STATISTICS, build_dataset, published_statistics
from igoas.data.samplers import EpochSampler, RandomIdentitySampler, RandomTrainSampler
from igoas.data.samplers import RandomTrainSampler as TrainSampler  # the interface name of the random sampler
from igoas.data.synthetic import OCCLUDER_KINDS, draw_occluder, render_synthetic, synthetic
from igoas.data.transforms import build_transforms
from igoas.imaging.images import pil_to_rgb, read_image
from igoas.imaging.preprocess import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATION
from igoas.utils.errors import ConfigError

__all__ = sorted([
    "DATASETS", "PUBLISHED_STATISTICS", "OCCLUDER_KINDS", "ReIDDataset", "Sample", "UnparsedFile",
    "build_dataset", "combine_train_sets", "draw_occluder", "published_statistics", "query_samples", "relabel",
    "render_synthetic", "TrainSampler", "ImageDataset", "collate_skipping_failed", "build_transforms", "read_image",
    "pil_to_rgb", "IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATION", "RandomTrainSampler", "RandomIdentitySampler",
    "EpochSampler", "build_train_loader", "build_test_loader", "check_dataset",
])
