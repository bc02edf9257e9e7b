"""Render the synthetic occluded-pedestrian dataset to disk in the Market-1501 layout.

Splits mirror Occluded-Duke's statistics (Miao et al., ICCV 2019): 9 % of the training
images occluded, every query occluded, 10 % of the gallery occluded plus distractor
identities, train and test identities disjoint. The `pretrain` size is a separate
population for synthetic pretraining: most identities train, 5 % of its images occluded. Each query is also written without its occluder (same frame,
same file name) to `query_holistic/`, so the cost of occlusion can be measured directly.

Every frame is rendered from its own seed (dataset seed, frame number), so the output is
the same byte for byte for a seed whatever the number of worker processes.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from igoas.data.synthetic.appearance import VIEWPOINTS, Identity, draw_person, sample_identity
from igoas.data.synthetic.occluders import place_occluder
from igoas.data.synthetic.scenes import Camera, apply_camera, draw_background, make_cameras
from igoas.utils.errors import ConfigError, DatasetError
from igoas.utils.fileio import staging_place

LOG = logging.getLogger(__name__)
VERSION = 2  # bump whenever the rendering changes; older copies are then refused, never replaced
GENERATOR = "igoas.synthetic"
NUM_CAMERAS = 6
SUPERSAMPLE = 2  # drawn at twice the output size, then reduced: smooth edges
JPEG_QUALITY = 90
DISTRACTOR_FRACTION = 0.2
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
HOLISTIC_FOLDER = "query_holistic"


@dataclass(frozen=True)
class SizePreset:
    """Identity count, images per identity (inclusive ranges), the share of identities that
    train and the share of training and gallery images that are occluded."""

    num_ids: int
    train_images: tuple[int, int]
    query_images: tuple[int, int]
    gallery_images: tuple[int, int]
    distractor_images: tuple[int, int]
    train_fraction: float = 0.6
    train_occluded: float = 0.09  # Occluded-Duke: 9 % of the training images
    gallery_occluded: float = 0.10  # Occluded-Duke: 10 % of the gallery


SIZES = {
    "tiny": SizePreset(12, (4, 6), (1, 2), (3, 4), (2, 3)),
    "small": SizePreset(100, (8, 12), (2, 3), (5, 8), (2, 4)),
    "default": SizePreset(250, (10, 16), (2, 4), (6, 10), (2, 5)),
    "large": SizePreset(600, (12, 18), (2, 4), (6, 12), (2, 5)),
    # Synthetic pretraining (`igoas pretrain`): 1,020 training identities, mostly unoccluded.
    "pretrain": SizePreset(1200, (6, 10), (1, 2), (3, 5), (1, 2), train_fraction=0.85, train_occluded=0.05),
}


@dataclass(frozen=True)
class FrameSpec:
    """One image to render: where it goes, who and which camera, and whether occluded."""

    serial: int
    split: str
    pid: int
    camid: int  # 0-based
    frame: int
    occluded: bool

    @property
    def filename(self) -> str:
        return f"{self.pid:04d}_c{self.camid + 1}s1_{self.frame:06d}_00.jpg"


def _count(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _cameras_for(rng: np.random.Generator, own: np.ndarray, count: int) -> list[int]:
    """`count` cameras for an identity: each of its cameras once, then any of them."""
    first = list(own[:count])
    return first + [int(c) for c in rng.choice(own, size=max(0, count - len(own)))]


def plan_frames(preset: SizePreset, num_ids: int, rng: np.random.Generator) -> list[FrameSpec]:
    """Which frames exist: identities 1..num_ids split train/test, then the distractors."""
    num_train = max(2, round(num_ids * preset.train_fraction))
    num_distractors = round(num_ids * DISTRACTOR_FRACTION)
    frame_clock = rng.integers(100, 5000, NUM_CAMERAS)
    frames: list[tuple[str, int, int, bool]] = []
    for pid in range(1, num_ids + num_distractors + 1):
        own = rng.permutation(NUM_CAMERAS)[: int(rng.integers(2, 5))]
        if pid <= num_train:
            cams = _cameras_for(rng, own, _count(rng, preset.train_images))
            frames += [("train", pid, c, bool(rng.random() < preset.train_occluded)) for c in cams]
        elif pid <= num_ids:
            # each query camera has other cameras with gallery images of this person
            queries = own[: _count(rng, preset.query_images)]
            frames += [("query", pid, int(c), True) for c in queries]
            cams = _cameras_for(rng, own, max(len(own), _count(rng, preset.gallery_images)))
            frames += [("gallery", pid, c, bool(rng.random() < preset.gallery_occluded)) for c in cams]
        else:
            cams = _cameras_for(rng, own, _count(rng, preset.distractor_images))
            frames += [("gallery", pid, c, bool(rng.random() < preset.gallery_occluded)) for c in cams]
    specs = []
    for serial, (split, pid, cam, occluded) in enumerate(frames):
        frame_clock[cam] += rng.integers(5, 400)
        specs.append(FrameSpec(serial, split, pid, int(cam), int(frame_clock[cam]), occluded))
    return specs


def sample_identities(count: int, rng: np.random.Generator) -> dict[int, Identity]:
    """`count` identities (pids 1..count), no two with the same categorical attributes."""
    identities: dict[int, Identity] = {}
    seen: set[tuple] = set()
    while len(identities) < count:
        ident = sample_identity(rng)
        if ident.key() not in seen:
            seen.add(ident.key())
            identities[len(identities) + 1] = ident
    return identities


def render_frame(spec: FrameSpec, ident: Identity, camera: Camera, image_size: tuple[int, int],
                 seed: int) -> tuple[Image.Image, Image.Image | None, dict]:
    """The image of a frame, its occluder-free twin (queries only) and its record for meta.json."""
    height, width = image_size
    rng = np.random.default_rng([seed, 3, spec.serial])
    canvas = (width * SUPERSAMPLE, height * SUPERSAMPLE)
    scene = draw_background(camera, *canvas, rng)
    person = Image.new("RGBA", canvas, (0, 0, 0, 0))
    body_height = canvas[1] * rng.uniform(0.82, 0.97)  # detection jitter: scale and position
    top = rng.uniform(-0.015, 0.99 - body_height / canvas[1]) * canvas[1]
    centre = canvas[0] * (0.5 + rng.uniform(-0.07, 0.07))
    weights = np.asarray(camera.view_weights)
    view = VIEWPOINTS[int(rng.choice(len(VIEWPOINTS), p=weights / weights.sum()))]
    draw_person(person, ident, centre, top, body_height, view, float(rng.uniform(0, 2 * np.pi)))
    scene.paste(person, (0, 0), person)
    camera_seed = int(rng.integers(2**63))  # the same sensor noise for both twins
    record = {"split": spec.split, "pid": spec.pid, "camid": spec.camid, "viewpoint": view,
              "occluder": None, "occluded_fraction": 0.0}
    holistic = apply_camera(scene, camera, (width, height), np.random.default_rng(camera_seed))
    if not spec.occluded:
        return holistic, None, record
    occlusion = place_occluder(np.asarray(person)[..., 3] > 127, rng)
    shape = Image.fromarray(occlusion.rgba, "RGBA")
    scene.paste(shape, occlusion.box[:2], shape)
    record.update(occluder=occlusion.kind, occluded_fraction=round(occlusion.fraction, 4))
    image = apply_camera(scene, camera, (width, height), np.random.default_rng(camera_seed))
    return image, holistic if spec.split == "query" else None, record


def _render_chunk(args: tuple) -> list[tuple[str, dict]]:
    """Render and write a list of frames (one worker's share); returns their records."""
    folder, specs, identities, cameras, image_size, seed = args
    records = []
    for spec in specs:
        image, holistic, record = render_frame(spec, identities[spec.pid], cameras[spec.camid], image_size, seed)
        rel = f"{SPLIT_FOLDERS[spec.split]}/{spec.filename}"
        image.save(Path(folder) / rel, "JPEG", quality=JPEG_QUALITY)
        if holistic is not None:
            holistic.save(Path(folder) / HOLISTIC_FOLDER / spec.filename, "JPEG", quality=JPEG_QUALITY)
        records.append((rel, record))
    return records


def _render_into(folder: Path, params: dict, preset: SizePreset, num_workers: int) -> None:
    seed = params["seed"]
    specs = plan_frames(preset, params["num_ids"], np.random.default_rng([seed, 0]))
    identities = sample_identities(max(s.pid for s in specs), np.random.default_rng([seed, 1]))
    cameras = make_cameras(np.random.default_rng([seed, 2]), NUM_CAMERAS)
    for sub in (*SPLIT_FOLDERS.values(), HOLISTIC_FOLDER):
        (folder / sub).mkdir()
    image_size = tuple(params["image_size"])
    chunks = [(str(folder), specs[i::max(1, num_workers)], identities, cameras, image_size, seed)
              for i in range(max(1, num_workers))]
    if num_workers > 1:
        with ProcessPoolExecutor(num_workers) as pool:
            results = list(pool.map(_render_chunk, chunks))
    else:
        results = [_render_chunk(chunks[0])]
    images = dict(sorted(r for chunk in results for r in chunk))
    meta = {
        "generator": GENERATOR,
        "params": params,
        "cameras": [asdict(c) for c in cameras],
        "identities": {str(pid): ident.labels for pid, ident in identities.items()},
        "images": images,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def read_meta(root: str | Path) -> dict | None:
    """The meta.json of a rendered copy, or None when there is none."""
    path = Path(root) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == GENERATOR else None


def _is_current(root: Path, params: dict) -> bool:
    meta = read_meta(root)
    if meta is None or meta.get("params") != params:
        return False
    expected = [root / rel for rel in meta["images"]]
    expected += [root / HOLISTIC_FOLDER / Path(rel).name for rel, r in meta["images"].items() if r["split"] == "query"]
    return all(path.is_file() for path in expected)


def _other_settings_message(out: Path, found: dict, asked: dict) -> str:
    """Why a copy rendered with other settings is not replaced, and the fix: the options
    that read the copy as it is (usually `data.options.size`), or another folder."""
    differing = [key for key, value in asked.items() if found.get(key) != value]
    listed = ", ".join(f"{key} {found.get(key)!r} here, {asked[key]!r} asked" for key in differing)
    message = f"synthetic: {out} holds a set rendered with other settings ({listed}); refusing to replace it. "
    if "version" in differing:
        return message + "It was rendered by another igoas version: point data.root at another folder to render anew."
    preset = SIZES.get(found.get("size"))
    if "size" in differing and preset is not None and found.get("num_ids") == preset.num_ids:
        differing = [key for key in differing if key != "num_ids"]  # the size brings its own count
    overrides = " ".join(f"data.options.{key}={_override_value(found[key])}" for key in differing)
    return message + (f"To use the set that is there, pass {overrides}; to render the one asked for, point "
                      "data.root at another folder.")


def _override_value(value: object) -> str:
    return f"[{','.join(str(v) for v in value)}]" if isinstance(value, list) else str(value)


def render_synthetic(out_dir: str | Path, num_ids: int | None = None, seed: int = 0, size: str = "default",
                     image_size: tuple[int, int] = (128, 64), num_workers: int = 1) -> Path:
    """Render the synthetic occluded-pedestrian dataset into `out_dir` and return it.

    `size` picks a preset (tiny, small, default, large) of identities and images per
    identity; `num_ids` overrides its identity count (train + test; 20 % more distractor
    identities are added to the gallery); `image_size` is (height, width). A copy whose
    meta.json records the same parameters is reused as it is; a copy rendered with other
    parameters is never replaced (a DatasetError says which differ); an absent or empty
    folder (or an incomplete copy of the same set) is rendered into a temporary folder next
    to `out_dir` and moved in place, so a reader never sees half a dataset, and the log
    says so. `num_workers` > 1 renders in parallel, with identical output.
    """
    if size not in SIZES:
        raise ConfigError(f"synthetic size {size!r} is not one of {', '.join(SIZES)}.")
    preset = SIZES[size]
    num_ids = int(num_ids or preset.num_ids)
    if num_ids < 4:
        raise ConfigError(f"synthetic: num_ids={num_ids} is too small; at least 4 identities are needed "
                          "(2 to train on, 2 to test).")
    height, width = (int(v) for v in image_size)
    if height < 32 or width < 16:
        raise ConfigError(f"synthetic: image_size={tuple(image_size)} is too small; use at least (32, 16).")
    params = {"version": VERSION, "seed": int(seed), "size": size, "num_ids": num_ids, "image_size": [height, width]}
    out = Path(out_dir).expanduser().absolute()
    if _is_current(out, params):
        return out
    existing = read_meta(out)
    if existing is not None and existing.get("params") != params:
        raise DatasetError(_other_settings_message(out, existing.get("params") or {}, params))
    if out.is_dir() and any(out.iterdir()) and existing is None:
        raise DatasetError(f"synthetic: {out} exists and is not a synthetic dataset rendered by igoas; "
                           "refusing to overwrite it. Choose an empty or new folder.")
    state = "incomplete, rendered again" if existing else "empty" if out.is_dir() else "new"
    LOG.warning("rendering the synthetic set (%s, seed %d, %d identities) into %s (%s folder)",
                size, params["seed"], num_ids, out, state)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_place(out.parent, f".{out.name}.rendering-", folder=True)
    try:
        _render_into(tmp, params, preset, num_workers)
        _move_into_place(tmp, out, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _move_into_place(tmp: Path, out: Path, params: dict) -> None:
    """Swap the rendered folder in; an older rendering is moved aside first, then removed.
    When another process has meanwhile written the very same set, its copy is kept."""
    if _is_current(out, params):
        return
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = staging_place(out.parent, f".{out.name}.old-", folder=True)
        os.replace(out, old / "previous")
    elif out.is_dir():
        out.rmdir()
    try:
        os.replace(tmp, out)
    except OSError:
        if not _is_current(out, params):  # another process finished first with the same set: keep it
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
