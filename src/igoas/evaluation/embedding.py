"""`embed(model, samples, preprocess, runtime)`: the one way igoas turns images into embeddings.

Evaluation during training, `igoas eval`, `extract`, `viz`, the stress test, the
corruption benchmark, the ablation, the demo and `ReIDModel` all call it, so the same
images give the same embeddings whichever entry point asks. Images are decoded, resized
and normalised by the checkpoint's `Preprocess` (the very arithmetic of the evaluation
transforms), and the forward runs under `speed.inference_context`. Where the network
runs is one `Runtime` value: device, precision, memory format and the distributed
context (each process embeds its contiguous share; every process gets all rows, with the
labels and skipped files of every share).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, Mapping, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from igoas.compute.distributed import gather_objects, gather_rows, shard
from igoas.compute.runtime import Runtime
from igoas.compute.speed import inference_context, prepare_model_for_inference, to_memory_format
from igoas.data.base import Sample
from igoas.evaluation.distance import average_flip_features
from igoas.imaging.images import ImageInput, image_to_tensor
from igoas.imaging.preprocess import Preprocess, PreprocessSource
from igoas.retrieval.features_file import Features
from igoas.utils.errors import IgoasError
from igoas.utils.progress import track

ON_ERROR = ("fail", "skip")

# What `embed` takes: samples, image paths or in-memory images to prepare, or a Dataset (an
# iterable of batches) whose items are already prepared dicts (image, pid, camid, path).
EmbedInput = Union[Sequence[Union[Sample, str, os.PathLike, ImageInput]], torch.utils.data.Dataset,
                   Iterable[Mapping[str, Any]]]


class _Images(torch.utils.data.Dataset):
    """Samples (path, pid, camid), paths or in-memory images -> normalised network input.

    An unreadable file raises (policy "fail") or comes back as None with the reason
    (policy "skip"), so one bad file never loses a long extraction.
    """

    def __init__(self, items: Sequence[Any], preprocess: Preprocess, on_error: str) -> None:
        self.items, self.preprocess, self.on_error = items, preprocess, on_error

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        source = getattr(item, "path", item)
        path = str(source) if isinstance(source, (str, os.PathLike)) else f"<image {index}>"
        try:
            image = self.preprocess.prepare(image_to_tensor(source))
        except IgoasError as err:
            if self.on_error == "fail":
                raise
            return {"path": path, "error": str(err)}
        return {"image": image, "pid": getattr(item, "pid", -1), "camid": getattr(item, "camid", -1), "path": path}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    loaded = [item for item in items if "error" not in item]
    return {
        "image": torch.stack([item["image"] for item in loaded]) if loaded else None,
        "pid": [item["pid"] for item in loaded],
        "camid": [item["camid"] for item in loaded],
        "path": [item["path"] for item in loaded],
        "bad": {item["path"]: item["error"] for item in items if "error" in item},
    }


def _batches(samples: Any, preprocess: Preprocess | None, runtime: Runtime, batch_size: int, num_workers: int,
             on_error: str) -> tuple[Iterable[Any], int]:
    """Batches of this process's share of `samples`, and how many items the share holds."""
    prepared = isinstance(samples, torch.utils.data.Dataset) or not isinstance(samples, Sequence)
    if prepared and runtime.distributed:
        raise IgoasError("a distributed embedding takes a list of samples, not prepared items")
    if isinstance(samples, torch.utils.data.Dataset):
        loader = torch.utils.data.DataLoader(samples, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        return loader, len(samples)
    if prepared:
        return samples, -1  # ready batches (dicts with image, pid, camid, path)
    if preprocess is None:
        raise IgoasError("embed needs the input preprocessing for a list of samples (a checkpoint's Preprocess)")
    items = list(samples)
    part = items[shard(len(items), runtime.ctx)] if runtime.distributed else items
    loader = torch.utils.data.DataLoader(_Images(part, preprocess, on_error), batch_size=batch_size,
                                         num_workers=num_workers, collate_fn=_collate)
    return loader, len(part)


def _forward(model: nn.Module, images: Tensor, flip: bool) -> Tensor:
    """Unit-length embeddings: the network's eval output (IGOAS: two unit-norm halves, one per
    branch, so of norm sqrt(2)) scaled to length 1, so every tool's distances share one scale."""
    features = model(images)
    if flip:
        parts = 2 if getattr(model, "suppression", False) else 1
        features = average_flip_features(features, model(torch.flip(images, dims=[3])), parts=parts)
    return F.normalize(features.float(), dim=1)


def embed(model: nn.Module, samples: EmbedInput, preprocess: PreprocessSource | None = None,
          runtime: Runtime | None = None, *,
          flip: bool = False, batch_size: int = 128, num_workers: int = 0, on_error: str = "fail",
          progress: bool = False, progress_label: str = "embedding batches") -> Features:
    """Unit-length float32 embeddings of `samples` in input order (the network's eval output
    scaled to length 1), with the path, identity and camera (-1 when unknown) of each row.

    `samples` is a list of dataset samples (path, pid, camid), image paths or in-memory
    images (PIL, arrays, tensors), prepared by `preprocess` (a `Preprocess`, a checkpoint
    payload or a run config); or a Dataset / an iterable of batches that already yields
    prepared items (dicts with image, pid, camid, path), as the stress tests build them.
    `flip` averages each embedding with that of the mirrored image. `on_error="skip"`
    leaves unreadable files out: they are listed in `bad_paths`, with the reasons in
    `metadata["bad_reasons"]`. The model is moved to the runtime's device and run in eval
    mode; every submodule is put back in the mode it was in (a fixbase epoch keeps its
    frozen layers in eval mode).
    """

    runtime = runtime or Runtime()
    if on_error not in ON_ERROR:
        raise IgoasError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    recipe = Preprocess.resolve(preprocess) if preprocess is not None else None
    loader, count = _batches(samples, recipe, runtime, batch_size, num_workers, on_error)
    modes = [(module, module.training) for module in model.modules()]
    prepare_model_for_inference(model.to(runtime.device), runtime.precision, runtime.channels_last, runtime.device)
    chunks, pids, camids, paths, bad = [], [], [], [], {}
    try:
        with inference_context(runtime.device, runtime.precision):
            batches = None if count < 0 else -(-count // batch_size)
            for batch in track(loader, batches, progress_label, enabled=progress):
                bad.update(batch.get("bad", {}))
                if batch["image"] is None:
                    continue
                images = to_memory_format(batch["image"].to(runtime.device, non_blocking=True), runtime.channels_last)
                chunks.append(_forward(model, images, flip).float().cpu())
                pids.append(np.asarray(batch["pid"]))
                camids.append(np.asarray(batch["camid"]))
                paths.extend(str(path) for path in batch["path"])
    finally:
        for module, training in modes:
            module.training = training
    rows = torch.cat(chunks) if chunks else torch.empty(0, getattr(model, "feature_dim", 0))
    pids = np.concatenate(pids) if pids else np.empty(0, np.int64)
    camids = np.concatenate(camids) if camids else np.empty(0, np.int64)
    if runtime.distributed:
        # Each share's rows, with the labels of the files it kept (skipped ones have no row),
        # concatenated in rank order like the rows.
        rows = gather_rows(rows, runtime.ctx)
        shares = gather_objects((paths, pids, camids, bad), runtime.ctx)
        paths = [path for share in shares for path in share[0]]
        pids = np.concatenate([share[1] for share in shares]).astype(np.int64, copy=False)
        camids = np.concatenate([share[2] for share in shares]).astype(np.int64, copy=False)
        bad = {path: reason for share in shares for path, reason in share[3].items()}
    return Features(rows.numpy(), paths, pids, camids, bad_paths=list(bad), metadata={"bad_reasons": bad} if bad else {})
