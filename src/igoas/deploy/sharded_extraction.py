"""Sharded extraction: the embeddings of a large image list as a folder of fixed-size shards.

`igoas extract CKPT IMAGES --shards OUT_DIR` (one process, or one per GPU/CPU share under
`torchrun`) cuts the image list (a folder tree, sorted, or a dataset split) into shards of
`shard_size` images: shard i holds images [i * shard_size, (i + 1) * shard_size), whatever
the number of processes, and is embedded by rank i % world_size. Each shard becomes

    shard-00000.npy    its N x D float32 embeddings (memory-mappable: np.load(mmap_mode="r"))
    shard-00000.json   ids, cameras and paths of those rows, the unreadable files it skipped,
                       and the sha256 of the .npy

each file written atomically, the JSON last: a shard whose JSON is there and whose .npy
matches the checksum in it is complete. When every shard is, rank 0 writes `manifest.json`
(the shards with their row counts and checksums, the image list's fingerprint, the
checkpoint's hash and the embedding settings). Running the same command again reuses the
complete shards and embeds only the missing or damaged ones, so a killed run resumes; a
folder made with another checkpoint, another image list or other settings is refused.

Bit identity: every shard is embedded in the same batches (cut from the shard's own start,
`batch_size` images each), so its rows do not depend on the world size. On the CPU they do
depend on the number of intra-op threads (measured: a ResNet-18 forward differs in the last
bits between 1 and 2 threads, and so does one image embedded in batches of different
sizes), so the thread count is fixed per process (`threads`, 1 by default from the command
line) and recorded with the other settings that a resumed run must repeat.

`open_sharded(folder)` reads the result without loading it: metadata arrays at once, each
shard's embeddings as a read-only memory map, and `write_merged` streams them into one .npy.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import torch

from igoas.artifacts.provenance import checkpoint_identity, sha256_of
from igoas.compute.distributed import DistributedContext, gather_objects
from igoas.deploy.extraction import ImageList
from igoas.deploy.inference import ReIDModel
from igoas.retrieval.features_file import Features, load_features
from igoas.retrieval.index import GalleryRows
from igoas.utils.errors import IgoasError
from igoas.utils.fileio import atomic_write, check_output, write_json

SHARDS_FORMAT = "igoas-feature-shards"
SHARDS_FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE = 4096
MANIFEST = "manifest.json"
# What the rows depend on beyond the checkpoint and the image list; a resumed run must repeat them.
SETTINGS = ("shard_size", "batch_size", "threads", "precision", "backend", "device_type")
_RERUN = "re-run with the settings it was made with, or write to a new folder (or delete this one)"


@dataclass(frozen=True)
class Shard:
    """Images [start, stop) of the list."""

    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"

    @property
    def images(self) -> int:
        return self.stop - self.start


def plan_shards(count: int, shard_size: int = DEFAULT_SHARD_SIZE) -> list[Shard]:
    """The shards of a list of `count` images: fixed `shard_size` pieces in order, the last one shorter."""
    if shard_size < 1:
        raise IgoasError(f"shard_size must be at least 1, got {shard_size}")
    return [Shard(index, start, min(start + shard_size, count))
            for index, start in enumerate(range(0, count, shard_size))]


def shards_of_rank(shards: list[Shard], rank: int, world_size: int) -> list[Shard]:
    """The shards process `rank` of `world_size` embeds: shard i goes to rank i % world_size."""
    return shards[rank::world_size]


def image_list_fingerprint(images: ImageList) -> str:
    """SHA-256 of the ordered paths, identities and cameras: what makes two image lists the same list."""
    text = json.dumps({"paths": images.paths, "pids": images.pids, "camids": images.camids})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class ShardedRun:
    """What `extract_sharded` did in this process."""

    folder: Path
    shards: int
    computed: list[int] = field(default_factory=list)  # shard indices this process embedded
    reused: list[int] = field(default_factory=list)  # this process's shards found complete
    manifest: Path | None = None  # written by rank 0


def extract_sharded(
    model: ReIDModel | str | os.PathLike,
    images: ImageList,
    out_dir: str | os.PathLike,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = 64,
    num_workers: int = 0,
    threads: int | None = None,
    ctx: DistributedContext | None = None,
    progress: bool = False,
) -> ShardedRun:
    """Embed this process's shards of `images` into `out_dir` (see the module text), then,
    on rank 0 once every process is done, write the manifest.

    `ctx` is the process group's context (`init_distributed`); None is one process.
    `threads` fixes torch's intra-op thread count while embedding (restored after); None
    keeps the current one, which is recorded either way.
    """

    ctx = ctx or DistributedContext()
    if not isinstance(model, ReIDModel):
        model = ReIDModel.from_checkpoint(model)
    folder = check_output(out_dir, folder=True)
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise IgoasError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        identity = _identity(model, images, shard_size, batch_size)
        _refuse_foreign(folder, identity)  # every process reads the same files: all refuse, or none
        shards = plan_shards(len(images.paths), shard_size)
        run = ShardedRun(folder, len(shards))
        records = []
        for shard in shards_of_rank(shards, ctx.rank, ctx.world_size):
            record = _complete_record(folder, shard, identity)
            if record is not None:
                run.reused.append(shard.index)
            else:
                record = _embed_shard(model, images, shard, folder, identity, batch_size, num_workers, progress)
                run.computed.append(shard.index)
            records.append(record)
        every = [record for share in gather_objects(records, ctx) for record in share]  # also the barrier
        if ctx.is_main:
            run.manifest = _write_manifest(folder, identity, sorted(every, key=lambda r: r["index"]), model)
        return run
    finally:
        torch.set_num_threads(previous)


def _identity(model: ReIDModel, images: ImageList, shard_size: int, batch_size: int) -> dict[str, Any]:
    checkpoint = checkpoint_identity(model.source)
    return {
        "checkpoint": checkpoint["path"] or model.source,  # absolute, like a features file's
        "checkpoint_sha256": checkpoint["sha256"],
        "image_list": image_list_fingerprint(images),
        "image_count": len(images.paths),
        "source": images.description,
        "settings": {"shard_size": shard_size, "batch_size": batch_size, "threads": torch.get_num_threads(),
                     "precision": model.precision, "backend": model.backend, "device_type": model.device.type},
    }


def _refuse_foreign(folder: Path, identity: dict[str, Any]) -> None:
    """An IgoasError naming the first file of `folder` that another extraction made."""
    documents = sorted(folder.glob("shard-*.json"))
    if (folder / MANIFEST).is_file():
        documents.insert(0, folder / MANIFEST)
    for path in documents:
        document = _read_json(path)
        if document.get("format") != SHARDS_FORMAT:
            raise IgoasError(f"{path}: not part of an igoas sharded extraction; write to another folder")
        if document.get("checkpoint_sha256") != identity["checkpoint_sha256"]:
            raise IgoasError(
                f"{path}: made with another checkpoint (sha256 {document.get('checkpoint_sha256')}, this one "
                f"{identity['checkpoint_sha256']}); its rows cannot be mixed with this model's. Write to a new "
                "folder, or delete this one to re-embed everything with this checkpoint")
        if document.get("image_list") != identity["image_list"]:
            raise IgoasError(
                f"{path}: made from another image list ({document.get('image_count')} images, fingerprint "
                f"{document.get('image_list')}; this list: {identity['image_count']} images, fingerprint "
                f"{identity['image_list']}): images were added, removed or renamed. Write to a new folder, "
                "or delete this one to start over")
        settings = document.get("settings") or {}
        changed = [f"{name} {settings.get(name)!r} (now {value!r})" for name, value in identity["settings"].items()
                   if settings.get(name) != value]
        if changed:
            raise IgoasError(f"{path}: made with other settings: {', '.join(changed)}; the rows would not be "
                             f"bit-identical to the other shards: {_RERUN}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise IgoasError(f"{path}: cannot be read as JSON ({err}); delete it and run again") from None
    if not isinstance(document, dict):
        raise IgoasError(f"{path}: expected a JSON object; delete it and run again")
    return document


def _complete_record(folder: Path, shard: Shard, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest entry of `shard` when its files are complete and its .npy matches its checksum; else None."""
    document_path, embeddings_path = folder / f"{shard.name}.json", folder / f"{shard.name}.npy"
    if not document_path.is_file() or not embeddings_path.is_file():
        return None
    document = _read_json(document_path)  # its identity was checked by _refuse_foreign
    if (document.get("start"), document.get("stop")) != (shard.start, shard.stop):
        return None
    if sha256_of(embeddings_path) != document.get("sha256"):
        return None  # truncated or damaged: embed it again
    return _record(shard, document)


def _record(shard: Shard, document: dict[str, Any]) -> dict[str, Any]:
    return {"index": shard.index, "name": shard.name, "embeddings": f"{shard.name}.npy",
            "metadata": f"{shard.name}.json", "start": shard.start, "stop": shard.stop,
            "rows": len(document["paths"]), "skipped": len(document["skipped"]), "sha256": document["sha256"],
            "embedding_dim": document["embedding_dim"]}


def _embed_shard(model: ReIDModel, images: ImageList, shard: Shard, folder: Path, identity: dict[str, Any],
                 batch_size: int, num_workers: int, progress: bool) -> dict[str, Any]:
    paths = images.paths[shard.start:shard.stop]
    result = model.embed_files(paths, batch_size=batch_size, num_workers=num_workers, progress=progress)
    kept = [shard.start + index for index, path in enumerate(paths) if path not in result.bad]
    dim = result.embeddings.shape[1] if len(result) else model.embedding_dim
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(result.embeddings, dtype=np.float32).reshape(len(result), dim))
    data = buffer.getvalue()
    atomic_write(folder / f"{shard.name}.npy", lambda handle: handle.write(data))
    document = {
        "format": SHARDS_FORMAT, "format_version": SHARDS_FORMAT_VERSION, **identity,
        "index": shard.index, "start": shard.start, "stop": shard.stop, "embedding_dim": int(dim),
        "sha256": hashlib.sha256(data).hexdigest(),
        "paths": result.paths,
        "pids": [images.pids[index] for index in kept],
        "camids": [images.camids[index] for index in kept],
        "skipped": result.bad,  # path -> why it could not be read
    }
    write_json(folder / f"{shard.name}.json", document, indent=None)
    return _record(shard, document)


def _write_manifest(folder: Path, identity: dict[str, Any], records: list[dict[str, Any]],
                    model: ReIDModel) -> Path:
    dims = {record["embedding_dim"] for record in records}
    manifest = {
        "format": SHARDS_FORMAT, "format_version": SHARDS_FORMAT_VERSION, **identity,
        "rows": sum(record["rows"] for record in records),
        "skipped": sum(record["skipped"] for record in records),
        "embedding_dim": dims.pop() if len(dims) == 1 else None,
        "model_spec": model.spec,
        "preprocess": model.preprocess_config.to_dict(),
        "shards": records,
    }
    return write_json(folder / MANIFEST, manifest)


class ShardedFeatures:
    """A finished sharded extraction, read lazily: what `open_sharded` returns.

    The metadata (paths, pids, camids, skipped files) is read at once; embeddings are read
    only through `shard_embeddings(i)`, a read-only memory map of one shard, and
    `write_merged` / `to_features`.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], documents: list[dict[str, Any]]) -> None:
        self.folder = folder
        self.manifest = manifest
        self.shards: list[dict[str, Any]] = manifest["shards"]
        self.paths: list[str] = [path for document in documents for path in document["paths"]]
        self.pids = np.asarray([p for document in documents for p in document["pids"]], dtype=np.int64)
        self.camids = np.asarray([c for document in documents for c in document["camids"]], dtype=np.int64)
        self.skipped: dict[str, str] = {p: r for document in documents for p, r in document["skipped"].items()}
        self.offsets = np.cumsum([0] + [record["rows"] for record in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    def shard_embeddings(self, index: int) -> np.ndarray:
        """Shard `index`'s rows (rows offsets[index]:offsets[index + 1] of the whole) as a read-only memory map."""
        record = self.shards[index]
        path = self.folder / record["embeddings"]
        try:
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise IgoasError(f"{path}: cannot be read ({err}); re-run the same `igoas extract --shards` command "
                             "to embed that shard again") from None
        if rows.dtype != np.float32 or rows.shape != (record["rows"], self.embedding_dim):
            raise IgoasError(f"{path}: holds {rows.dtype} {rows.shape}, the manifest says float32 "
                             f"({record['rows']}, {self.embedding_dim}); re-run the same `igoas extract --shards` "
                             "command to embed that shard again")
        return rows

    def iter_embeddings(self) -> Iterator[np.ndarray]:
        """Each shard's memory-mapped rows in order."""
        for index in range(len(self.shards)):
            yield self.shard_embeddings(index)

    def verify(self) -> None:
        """Check every shard's .npy against its checksum (reads every file once); IgoasError naming the first bad one."""
        for record in self.shards:
            path = self.folder / record["embeddings"]
            if not path.is_file() or sha256_of(path) != record["sha256"]:
                raise IgoasError(f"{path}: missing or does not match its checksum in {self.folder / MANIFEST}; "
                                 "re-run the same `igoas extract --shards` command to embed that shard again")

    def write_merged(self, path: str | os.PathLike) -> Path:
        """All rows as one N x D float32 .npy, written atomically one shard at a time from the memory maps."""

        def write(handle: IO[bytes]) -> None:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                      "shape": (len(self), self.embedding_dim)}
            np.lib.format.write_array_header_1_0(handle, header)
            for rows in self.iter_embeddings():
                handle.write(memoryview(np.ascontiguousarray(rows)).cast("B"))

        return atomic_write(check_output(path), write)

    def to_features(self) -> Features:
        """Everything in memory as one Features (what `igoas search build` and `save_features` take)."""
        embeddings = (np.concatenate(list(self.iter_embeddings())) if self.shards
                      else np.zeros((0, self.embedding_dim or 0), np.float32))
        return Features(embeddings=embeddings, paths=self.paths, pids=self.pids, camids=self.camids,
                        bad_paths=list(self.skipped), metadata=self.metadata)

    @property
    def metadata(self) -> dict[str, Any]:
        """The features-file metadata of these embeddings: the model that made them, its
        input recipe, precision and back end, the folder, and the skipped files' reasons."""
        settings = self.manifest.get("settings") or {}
        metadata = {key: self.manifest.get(key) for key in ("checkpoint", "checkpoint_sha256", "model_spec",
                                                            "preprocess")}
        metadata.update(precision=settings.get("precision"), backend=settings.get("backend"),
                        source=str(self.folder), bad_reasons=self.skipped)
        return metadata


def gallery_rows(source: str | os.PathLike) -> GalleryRows:
    """A features file, or a sharded extraction's folder read shard by shard from its memory
    maps (rows never all in memory), as the row stream `GalleryIndex.build` takes."""
    source = Path(source)
    if not source.is_dir():
        return GalleryRows.from_features(load_features(source), str(source))
    shards = open_sharded(source)
    return GalleryRows(shards.paths, shards.pids, shards.camids, shards.embedding_dim, shards.iter_embeddings,
                       {"features": shards.metadata}, str(shards.folder))


def open_sharded(folder: str | os.PathLike) -> ShardedFeatures:
    """Read a sharded extraction's manifest and metadata; embeddings stay on disk (see ShardedFeatures)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        hint = ("the extraction is unfinished: re-run the same `igoas extract --shards` command to finish it"
                if any(folder.glob("shard-*.json")) else
                f"write one with `igoas extract CKPT IMAGES --shards {folder}`")
        raise IgoasError(f"{manifest_path}: no such file; {hint}")
    manifest = _read_json(manifest_path)
    if manifest.get("format") != SHARDS_FORMAT or not isinstance(manifest.get("shards"), list):
        raise IgoasError(f"{manifest_path}: not an igoas sharded-extraction manifest; write it with "
                         f"`igoas extract CKPT IMAGES --shards {folder}`")
    documents = []
    for record in manifest["shards"]:
        document = _read_json(folder / record["metadata"])
        if document.get("sha256") != record["sha256"] or len(document.get("paths", [])) != record["rows"]:
            raise IgoasError(f"{folder / record['metadata']}: does not match {manifest_path}; re-run the same "
                             "`igoas extract --shards` command")
        documents.append(document)
    return ShardedFeatures(folder, manifest, documents)
