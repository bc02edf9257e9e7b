"""Reproducing the paper's tables: which preset makes each number, and how far a run lands from it.

Each table row names the preset that trains it, the dataset and query set it is read
from, and the published value where this project holds a checked copy of it. For
Occluded-Duke the authors' own training log gives a whole trajectory (SPEC section 6), so
a run is compared epoch by epoch, not only at the end. Run folders are told apart by the
config they were trained with, never by their names or order.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig

from igoas.artifacts.provenance import sha256_of
from igoas.artifacts.run_dir import RunDir
from igoas.config import weights_name
from igoas.model import pretrained as model_pretrained
from igoas.studies.fingerprint import differences, fingerprint, same_recipe, saved_fingerprint
from igoas.utils.errors import IgoasError

# Every evaluation in the authors' log of the published Occluded-Duke run
# (log/2020-12-10-21-05-33: every 4th and every 10th epoch of 120): epoch -> (R1, mAP) in
# percent. SPEC section 6's curve is a subset of it.
OCCLUDED_DUKE_TRAJECTORY: dict[int, tuple[float, float]] = {
    4: (17.1, 11.1), 8: (40.0, 31.6), 10: (38.9, 31.8), 12: (40.1, 32.1), 16: (42.4, 34.0),
    20: (47.2, 36.5), 24: (53.2, 44.6), 28: (55.5, 46.8), 30: (57.1, 47.7), 32: (56.8, 48.0),
    36: (57.4, 48.2), 40: (59.0, 48.4), 44: (59.5, 49.1), 48: (59.5, 49.2), 50: (60.0, 49.2),
    52: (59.5, 49.2), 56: (59.9, 49.5), 60: (60.1, 49.4), 64: (60.2, 49.1), 68: (59.6, 49.3),
    70: (59.7, 49.1), 72: (59.3, 49.0), 76: (59.4, 48.9), 80: (59.6, 48.7), 84: (60.0, 48.9),
    88: (59.3, 48.4), 90: (60.2, 48.7), 92: (60.4, 48.8), 96: (60.0, 48.6), 100: (60.4, 48.7),
    104: (60.5, 48.7), 108: (59.8, 48.6), 110: (59.7, 48.6), 112: (59.7, 48.5), 116: (59.8, 48.5),
    120: (60.1, 48.6),
}

# How close a faithful reproduction is expected to land (percentage points).
TOLERANCE = 1.0


@dataclass(frozen=True)
class Row:
    """One number of a paper table and how to produce it."""

    name: str
    preset: str
    dataset: str  # the evaluated dataset (a target of the preset)
    query_set: str = "query"
    expected_r1: float | None = None  # published value, where checked; None = not held here
    expected_map: float | None = None
    trajectory: Mapping[int, tuple[float, float]] = field(default_factory=dict)
    options: tuple[str, ...] = ()  # extra overrides this row needs
    note: str = ""


TABLES: dict[str, tuple[Row, ...]] = {
    "table1": (
        Row("Occluded-Duke", "occluded_duke_igoas", "occluded_duke", expected_r1=60.1, expected_map=49.4,
            trajectory=OCCLUDED_DUKE_TRAJECTORY,
            note="published = the authors' evaluation at epoch 60 of a 120-epoch run (decays at 20, 40, 90)"),
    ),
    "table2": (
        Row("Occluded-ReID (standard: trained on Market-1501)", "occluded_reid_igoas", "occluded_reid"),
        Row("Partial-REID (trained on Market-1501)", "occluded_reid_igoas", "partial_reid"),
        Row("Partial-iLIDS (trained on Market-1501)", "occluded_reid_igoas", "partial_ilids"),
        Row("Occluded-ReID (authors' half split)", "occluded_reid_half_igoas", "occluded_reid",
            note="trained on identities 88-187 of Occluded-ReID, tested on the other 100"),
    ),
    "table3": (
        Row("Market-1501", "market1501_igoas", "market1501"),
        Row("DukeMTMC-reID", "dukemtmcreid_igoas", "dukemtmcreid"),
    ),
}


@dataclass
class Comparison:
    """A run's numbers next to the published ones."""

    row: Row
    best: dict[str, float] | None  # best-mAP evaluation of the run: epoch, R1, mAP
    last: dict[str, float] | None  # last evaluation of the run
    per_epoch: list[dict[str, float]]  # epochs present in both the run and the reference trajectory

    def lines(self) -> list[str]:
        row, out = self.row, [f"{self.row.name}  (preset {self.row.preset})"]
        if self.last is None:
            return out + ["  no evaluation of this dataset found in the run"]
        for label, entry in (("best", self.best), ("last", self.last)):
            out.append(f"  {label:>4} (epoch {entry['epoch']:g}): R1 {entry['R1']:.1f}  mAP {entry['mAP']:.1f}"
                       + _delta(entry, row))
        if row.expected_r1 is None:
            out.append("  published value: not held in this repository; compare with the paper's table by hand")
        else:
            out.append(f"  published: R1 {row.expected_r1:.1f}  mAP {row.expected_map:.1f}"
                       + (f"  ({row.note})" if row.note else ""))
        if self.per_epoch:
            off = [p for p in self.per_epoch if max(abs(p["dR1"]), abs(p["dmAP"])) > TOLERANCE]
            out.append(f"  trajectory: {len(self.per_epoch)} epochs compared with the authors' log, "
                       f"{len(off)} more than {TOLERANCE:g} point off")
            out += [f"    epoch {p['epoch']:>3g}: R1 {p['R1']:.1f} ({p['dR1']:+.1f})  mAP {p['mAP']:.1f} ({p['dmAP']:+.1f})"
                    for p in self.per_epoch]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.row.name, "preset": self.row.preset, "dataset": self.row.dataset,
                "expected": None if self.row.expected_r1 is None else
                {"R1": self.row.expected_r1, "mAP": self.row.expected_map},
                "best": self.best, "last": self.last, "per_epoch": self.per_epoch}


def _delta(entry: Mapping[str, float], row: Row) -> str:
    if row.expected_r1 is None:
        return ""
    return f"   vs published: R1 {entry['R1'] - row.expected_r1:+.1f}  mAP {entry['mAP'] - row.expected_map:+.1f}"


def table_rows(table: str) -> tuple[Row, ...]:
    key = table.lower().replace(" ", "").replace("_", "")
    key = key if key.startswith("table") else f"table{key}"
    if key not in TABLES:
        raise IgoasError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    return TABLES[key]


def read_evaluations(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluation records (`metrics.jsonl`) of a training run, in order."""
    path = RunDir(run_dir).metrics_log
    if not path.is_file():
        raise IgoasError(f"{path}: not found; is {run_dir} a training run folder that has been evaluated?")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise IgoasError(f"{path}, line {number}: not valid JSON") from None
    return records


def metrics_of(record: Mapping[str, Any], dataset: str, query_set: str = "query") -> dict[str, float] | None:
    """The R1/mAP entry of one dataset's query set in an evaluation record, if present."""
    sets = record.get("metrics", record)
    for key in (f"{dataset}/{query_set}", dataset if query_set == "query" else None, query_set):
        if key is not None and isinstance(sets.get(key), Mapping) and "mAP" in sets[key]:
            return dict(sets[key])
    return None


def compare_run(run_dir: str | Path, row: Row) -> Comparison:
    """Compare a run's evaluations with the published numbers of one table row."""
    points = []
    for record in read_evaluations(run_dir):
        found = metrics_of(record, row.dataset, row.query_set)
        if found is not None:
            points.append({"epoch": float(record.get("epoch", len(points))), "R1": found["R1"], "mAP": found["mAP"]})
    if not points:
        return Comparison(row, None, None, [])
    best = max(points, key=lambda p: p["mAP"])
    per_epoch = [
        {**p, "dR1": p["R1"] - row.trajectory[int(p["epoch"])][0], "dmAP": p["mAP"] - row.trajectory[int(p["epoch"])][1]}
        for p in points if int(p["epoch"]) in row.trajectory
    ]
    return Comparison(row, best, points[-1], per_epoch)


def recipe(config: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """What a run learns (`igoas.studies.fingerprint.fingerprint`), also without its targets' roots:
    where a table's datasets lie (`--root`) does not change which preset a run is; and with
    its pretrained weights by content (`weights_identity`): a run trained from a local copy
    of `resnet50-0676ba61.pth` is a run of a preset asking for `imagenet1k_v1`."""
    values = fingerprint(config)
    model = values.get("model", {})
    if "pretrained" in model:
        model["pretrained"] = weights_identity(model["pretrained"], model.get("backbone"))
    for options in values.get("data", {}).get("target_options", {}).values():
        if isinstance(options, dict):
            options.pop("root", None)
    return values


def weights_identity(pretrained: bool | str | None, backbone: str) -> bool | str | None:
    """What `pretrained` loads, equal for every spelling of the same weights: a torchvision
    weight-set name (for `True`, a name, or a local copy of that set's file, recognised by
    the SHA-256 prefix in torchvision's file name), `sha256:<hex>` for another local file,
    and the value itself otherwise (False, or a path that is not a file here)."""

    name = weights_name(pretrained)
    if name is not None:
        return name
    if not isinstance(pretrained, (str, Path)) or not Path(pretrained).is_file():
        return pretrained
    status = Path(pretrained).stat()
    digest = _cached_sha256(str(Path(pretrained).resolve()), status.st_mtime_ns, status.st_size)
    for prefix, weight_set in model_pretrained.torchvision_hash_prefixes(backbone).items():
        if digest.startswith(prefix):
            return weight_set
    return f"sha256:{digest}"


@functools.lru_cache(maxsize=32)
def _cached_sha256(path: str, mtime_ns: int, size: int) -> str:
    """A file's SHA-256, computed once per version of the file (a ResNet-50 is 100 MB)."""
    return sha256_of(path)


def saved_recipe(run_dir: str | Path) -> dict[str, Any]:
    """The recipe of the config a run folder was trained with (its config.yaml)."""
    path = RunDir(run_dir).config
    if not path.is_file():
        raise IgoasError(f"{path}: not found; is {run_dir} a training run folder?")
    return recipe(saved_fingerprint(path))


def match_runs(run_dirs: Iterable[str | Path], configs: Mapping[str, Any]) -> dict[str, Path]:
    """Assign each run folder to the preset (a key of `configs`, its config the value) that
    it was trained with; a folder of none of them, of several, or a second folder of one
    preset, and a preset without a folder, are refused."""
    wanted = {preset: recipe(config) for preset, config in configs.items()}
    found: dict[str, Path] = {}
    for run_dir in map(Path, run_dirs):
        saved = saved_recipe(run_dir)
        matches = [preset for preset, values in wanted.items() if same_recipe(saved, values)]
        if not matches:
            nearest = min(wanted, key=lambda preset: len(differences(saved, wanted[preset])))
            raise IgoasError(f"{run_dir} was not trained with any preset of this table ({', '.join(wanted)}); "
                             f"it differs from {nearest} in {'; '.join(differences(saved, wanted[nearest])[:5])}. "
                             "Give the overrides it was trained with (they apply to every preset)")
        if len(matches) > 1:
            raise IgoasError(f"{run_dir} matches several presets ({', '.join(matches)}); cannot tell its table row")
        if matches[0] in found:
            raise IgoasError(f"{found[matches[0]]} and {run_dir} are both runs of {matches[0]}; "
                             "give one per preset")
        found[matches[0]] = run_dir
    missing = [preset for preset in wanted if preset not in found]
    if missing:
        raise IgoasError(f"no run folder of {', '.join(missing)} given; this table needs one run folder per preset "
                         f"({', '.join(wanted)})")
    return found
