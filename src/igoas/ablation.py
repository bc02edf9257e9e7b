"""The ablation study on the embedded synthetic occluded benchmark (`igoas ablation`).

Six arms share one CPU-sized recipe (the `synthetic_ablation` preset) and differ only in
the network and its training occlusion (`ARMS`). Each arm is trained once per seed,
scored at the end of training on the occluded queries and on their occluder-free twins
(the same gallery), and put through the occlusion stress test. The study folder then
receives `results.json`, `table.md`, `stress.png` (stress-test curves, mean over seeds)
and `activations.png` (paper Fig. 9 style), each written atomically.

Resumable: every (arm, seed) trains in its own folder `runs/<arm>/seed<N>`. A run whose
training and stress test finished is read back from its `ablation_run.json` instead of
being trained again, an interrupted training continues from its last checkpoint, and a
folder trained with a different recipe is reported rather than silently mixed in.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from igoas.config import load_config, to_dict, validate
from igoas.fileio import atomic_write, write_json
from igoas.errors import ConfigError, IgoasError
from igoas.robustness import REPORTED_METRICS
from igoas.speed import resolve_precision

DEFAULT_RECIPE = "synthetic_ablation"
RUN_RECORD = "ablation_run.json"
TABLE_METRICS = ("R1", "mAP", "mINP")

# Shrinks any recipe to a pipeline check of seconds per arm (`reduced=True`, the test suite).
REDUCED_OVERRIDES = ("data.options.size=tiny", "data.height=64", "data.width=32", "data.batch_size=8",
                     "train.epochs=1", "optim.warmup_epochs=0", "eval.batch_size=64")

# Keys that change where or how visibly a run executes, not what it learns: a study moved
# to another folder or re-run with more workers still counts as the same study (eval.fprs
# only adds TPR columns, which the study does not report).
RUNTIME_KEYS = ("data.root", "data.num_workers", "data.on_error", "eval.num_workers", "eval.fprs", "train.output_dir",
                "train.device", "train.log_every", "train.tensorboard", "train.progress_bar")


def _no_options(recipe_options: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def _recipe_options(recipe_options: Mapping[str, Any]) -> dict[str, Any]:
    return dict(recipe_options)


def _erase_half_the_images(recipe_options: Mapping[str, Any]) -> dict[str, Any]:
    # Zhong et al.'s probability 0.5: a single-branch network that never sees an unerased
    # image during training meets only unerased ones at test time (measured: it collapses).
    return {"probability": 0.5}


def _fixed_at_final_ratio(recipe_options: Mapping[str, Any]) -> dict[str, Any]:
    # The size the incremental schedule ends at, held from the first step; fill and aspect as the recipe's IGO.
    return {**recipe_options, "area_ratio": recipe_options.get("final", 1 / 3)}


@dataclass(frozen=True)
class Arm:
    """One compared method: the network (`build_model` name), its training occlusion, and
    how its occlusion options follow from the recipe's (the IGO schedule)."""

    model: str
    occlusion: str
    label: str  # short name for figure columns
    description: str
    occlusion_options: Callable[[Mapping[str, Any]], dict[str, Any]] = _no_options


ARMS: dict[str, Arm] = {
    "baseline": Arm("baseline", "none", "baseline", "global branch only, no occlusion"),
    "random_erasing": Arm("baseline", "random_erasing", "+ RE", "baseline + single-image random erasing (p = 0.5)",
                          _erase_half_the_images),
    "batch_dropblock": Arm("baseline", "batch_dropblock", "+ BDB", "baseline + batch DropBlock on the stage-4 map"),
    "igoas_no_osm": Arm("igoas_no_osm", "igo", "no OSM", "IGOAS without the OSM mask loss", _recipe_options),
    "igo_fixed": Arm("igoas", "igo_fixed", "fixed IGO", "IGOAS with fixed-size (non-incremental) occlusion",
                     _fixed_at_final_ratio),
    "igoas": Arm("igoas", "igo", "IGOAS", "full IGOAS (incremental IGO + OSM)", _recipe_options),
}


@dataclass(frozen=True)
class StressSettings:
    """The occlusion stress test run on every trained model (see `igoas.robustness`).

    Clean (holistic) queries are occluded, so the curves start from the unoccluded score;
    one-colour rectangles are what the IGO arms train with, the occluded query set's
    rendered occluders are the test no arm trains on.
    """

    areas: tuple[float, ...] = (0.0, 15.0, 30.0, 45.0)
    positions: tuple[str, ...] = ("top", "bottom", "left", "right", "random")
    occluder: str = "rectangle"
    query_set: str = "holistic"
    seed: int = 0
    batch_size: int = 128


STRESS = StressSettings()
REDUCED_STRESS = StressSettings(areas=(0.0, 30.0), positions=("top", "random"))


@dataclass
class AblationResult:
    """What a study produced: per-run records, per-arm summaries and the files written.

    `summary[arm][query_set][metric]` holds mean, std (over seeds, n-1; 0 for one seed),
    min, max and the per-seed values, in percent.
    """

    out_dir: Path
    arms: list[str]
    seeds: list[int]
    runs: list[dict[str, Any]]
    summary: dict[str, dict[str, dict[str, dict[str, Any]]]]
    stress: dict[str, list[dict[str, Any]]]
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "arms": self.arms, "seeds": self.seeds, "runs": self.runs,
                "summary": self.summary, "stress": self.stress, "files": {k: str(v) for k, v in self.files.items()}}


# ----------------------------------------------------------------------------- configs
def arm_config(arm: str, seed: int, recipe: str | os.PathLike[str] = DEFAULT_RECIPE,
               overrides: Iterable[str] = ()) -> DictConfig:
    """The training config of one arm: the recipe with `overrides` applied, then the arm's
    network and occlusion, and `train.seed=seed`."""
    if arm not in ARMS:
        raise ConfigError(f"unknown ablation arm {arm!r}; choose from {', '.join(ARMS)}")
    cfg = load_config(recipe, overrides)
    spec = ARMS[arm]
    recipe_options = to_dict(cfg.model.occlusion_options)
    cfg.model.name = spec.model
    cfg.model.occlusion = spec.occlusion
    cfg.model.occlusion_options = spec.occlusion_options(recipe_options)
    cfg.train.seed = int(seed)
    validate(cfg)
    return cfg


def _as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists), so saved and fresh values compare equal."""
    return json.loads(json.dumps(value))


def _fingerprint(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config without RUNTIME_KEYS: two runs with equal fingerprints learn the same thing."""
    values = _as_json(to_dict(cfg) if isinstance(cfg, DictConfig) else cfg)
    for key in RUNTIME_KEYS:
        section, name = key.split(".")
        values.get(section, {}).pop(name, None)
    return values


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    a, b = _flat(old), _flat(new)
    return [f"{key}: {a.get(key)!r} -> {b.get(key)!r}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ConfigError(f"the study needs at least one seed, got seeds={seeds}")
        return list(range(1, int(seeds) + 1))
    listed = [int(seed) for seed in seeds]
    if not listed or len(set(listed)) != len(listed):
        raise ConfigError(f"seeds must be a count or a list of distinct integers, got {list(seeds)}")
    return listed


def _arm_list(methods: Sequence[str] | None) -> list[str]:
    chosen = list(ARMS) if not methods else list(dict.fromkeys(methods))
    unknown = [name for name in chosen if name not in ARMS]
    if unknown:
        raise ConfigError(f"unknown ablation arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    return chosen


# ----------------------------------------------------------------------------- one run
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _check_same_recipe(run_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Refuse to continue or reuse a run folder that was trained with another config."""
    from igoas.engine.trainer import CONFIG_FILE

    saved_file = run_dir / CONFIG_FILE
    if not saved_file.is_file():
        return
    saved = _fingerprint(OmegaConf.to_container(OmegaConf.load(saved_file), resolve=True))
    changes = _differences(saved, fingerprint)
    if changes:
        raise ConfigError(f"{run_dir} was trained with a different recipe ({'; '.join(changes[:5])}); "
                          "delete that folder to retrain it, or give the study another --out folder")


def _train_arm(cfg: DictConfig, run_dir: Path, log: Callable[[str], None]) -> float | None:
    """Train (or finish training) one run; seconds spent, or None when it had already finished."""
    from igoas.engine.trainer import FINAL_METRICS, LAST, train

    _check_same_recipe(run_dir, _fingerprint(cfg))
    if (run_dir / FINAL_METRICS).is_file():
        return None
    resume = run_dir if (run_dir / LAST).is_file() else None
    log(f"{'continuing' if resume else 'training'} {run_dir}")
    started = time.perf_counter()
    result = train(cfg, resume=resume)
    if not result.finished:
        raise IgoasError(f"{run_dir}: training stopped at iteration {result.iteration} before the last epoch "
                         "(train.stop_after_iters?); run the same study command again to continue it")
    return time.perf_counter() - started


def _final_metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    from igoas.engine.trainer import FINAL_METRICS

    saved = _read_json(run_dir / FINAL_METRICS)
    if not isinstance(saved, dict) or not isinstance(saved.get("query_sets"), dict):
        raise IgoasError(f"{run_dir / FINAL_METRICS}: missing or unreadable; delete {run_dir} and run the study "
                         "again to retrain this arm")
    return {name: {metric: float(values[metric]) for metric in REPORTED_METRICS}
            for name, values in saved["query_sets"].items()}


def _run_one(arm: str, seed: int, cfg: DictConfig, run_dir: Path, dataset: Any, stress: StressSettings,
             log: Callable[[str], None]) -> dict[str, Any]:
    """Train, score and stress-test one (arm, seed), or read back the record of a finished one."""
    from igoas.engine.trainer import LAST
    from igoas.robustness import occlusion_stress_test

    fingerprint = _fingerprint(cfg)
    saved = _read_json(run_dir / RUN_RECORD)
    if (isinstance(saved, dict) and saved.get("config") == fingerprint
            and saved.get("stress_settings") == _as_json(asdict(stress))):
        log(f"{arm} seed {seed}: finished before, reusing {run_dir / RUN_RECORD}")
        return saved
    cfg.train.output_dir = str(run_dir)
    train_seconds = _train_arm(cfg, run_dir, log)
    started = time.perf_counter()
    device = _device(cfg)
    # Scored like the run's own evaluation, so the stress test's area-0 point is its holistic score.
    result = occlusion_stress_test({arm: run_dir / LAST}, dataset, stress.areas, stress.positions,
                                   occluder=stress.occluder, seed=stress.seed, query_set=stress.query_set,
                                   batch_size=stress.batch_size, num_workers=cfg.eval.num_workers, device=device,
                                   metric=cfg.eval.metric, flip=cfg.eval.flip,
                                   precision=resolve_precision(cfg.eval.precision, device))
    record = {"arm": arm, "seed": seed, "run_dir": str(run_dir), "metrics": _final_metrics(run_dir),
              "stress": [asdict(r) for r in result.records], "train_seconds": train_seconds,
              "stress_seconds": time.perf_counter() - started, "config": fingerprint,
              "stress_settings": asdict(stress)}
    write_json(run_dir / RUN_RECORD, record)
    scores = "  ".join(f"{name} R1 {m['R1']:.1f} mAP {m['mAP']:.1f}" for name, m in record["metrics"].items())
    log(f"{arm} seed {seed}: {scores}")
    return record


def _device(cfg: DictConfig) -> str:
    if cfg.train.device != "auto":
        return str(cfg.train.device)
    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------- aggregation
def _statistics(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "min": float(array.min()), "max": float(array.max()), "values": [float(v) for v in array]}


def _summarize(runs: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per arm, per query set, per metric: statistics over seeds; plus the stress-test
    mAP averaged over every occluded setting (area > 0) as query set "stress"."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for arm in arms:
        own = [run for run in runs if run["arm"] == arm]
        sets: dict[str, dict[str, Any]] = {}
        for query_set in own[0]["metrics"]:
            sets[query_set] = {metric: _statistics([run["metrics"][query_set][metric] for run in own])
                               for metric in own[0]["metrics"][query_set]}
        sets["stress"] = {metric: _statistics([np.mean([r[metric] for r in run["stress"] if r["area"] > 0])
                                               for run in own]) for metric in TABLE_METRICS}
        summary[arm] = sets
    return summary


def _mean_stress(runs: Sequence[Mapping[str, Any]], arms: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per arm, the stress-test records averaged over seeds (one record per position and area)."""
    averaged: dict[str, list[dict[str, Any]]] = {}
    for arm in arms:
        groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
        for run in runs:
            if run["arm"] == arm:
                for record in run["stress"]:
                    groups.setdefault((record["position"], float(record["area"])), []).append(record)
        averaged[arm] = [{"checkpoint": arm, "position": position, "area": area, "seeds": len(records),
                          "occluded_percent": records[0]["occluded_percent"],
                          **{m: float(np.mean([r[m] for r in records])) for m in REPORTED_METRICS}}
                         for (position, area), records in groups.items()]
    return averaged


# ----------------------------------------------------------------------------- outputs
def _cell(stats: Mapping[str, Any], seeds: int) -> str:
    return f"{stats['mean']:.1f} ± {stats['std']:.1f}" if seeds > 1 else f"{stats['mean']:.1f}"


def format_table(summary: Mapping[str, Any], arms: Sequence[str], seeds: Sequence[int]) -> str:
    """The Markdown table: one row per arm; occluded, holistic and stress-test columns."""
    groups = [("occluded", "query"), ("holistic", "holistic"), ("stress", "stress")]
    header = ["method"] + [f"{title} {metric}" for title, _ in groups for metric in TABLE_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        cells = [f"{arm}"]
        for _, key in groups:
            cells += [_cell(summary[arm][key][metric], len(seeds)) if key in summary[arm] else "n/a"
                      for metric in TABLE_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _table_document(summary: Mapping[str, Any], arms: Sequence[str], seeds: Sequence[int], recipe: str,
                    stress: StressSettings) -> str:
    spread = "mean ± standard deviation over seeds" if len(seeds) > 1 else "one seed"
    areas = ", ".join(f"{a:g}" for a in stress.areas if a > 0)
    seed_words = f"Seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    return "\n".join([
        f"# Ablation on the synthetic occluded benchmark (recipe `{recipe}`)", "",
        f"{seed_words}; values in percent, {spread}. \"occluded\": the occluded queries; \"holistic\": the "
        "same frames without their occluder, against the same gallery; \"stress\": the holistic queries "
        f"occluded by {stress.occluder}s of {areas} % of the image at {', '.join(stress.positions)}, "
        "averaged over those settings.", "",
        format_table(summary, arms, seeds), "",
        "Methods: " + "; ".join(f"`{arm}` = {ARMS[arm].description}" for arm in arms) + ".", "",
        "Figures: `stress.png` (stress-test curves, mean over seeds), `activations.png` (stage-4 activation "
        f"maps of seed {seeds[0]}'s models; columns ending in S show the suppression branch).", ""])


def _example_queries(dataset: Any, count: int) -> list[str]:
    """`count` occluded queries of different identities, spread over the query list."""
    firsts = list({sample.pid: sample for sample in sorted(dataset.query, key=lambda s: s.path)}.values())
    picks = np.linspace(0, len(firsts) - 1, num=min(count, len(firsts))).round().astype(int)
    return [firsts[index].path for index in dict.fromkeys(picks.tolist())]


def plot_activation_figure(run_dirs: Mapping[str, Path], image_paths: Sequence[str], out_path: Path) -> Path:
    """Paper Fig. 9 style: for each image, the global-branch activation map of every arm,
    then the suppression-branch map of the arms that have one."""
    from igoas.engine.checkpoint import model_from_checkpoint
    from igoas.engine.trainer import LAST
    from igoas.preprocess import Preprocess
    from igoas.viz import activation_maps, plot_activation_comparison

    global_maps: dict[str, torch.Tensor] = {}
    suppression_maps: dict[str, torch.Tensor] = {}
    images = preprocess = None
    for arm, run_dir in run_dirs.items():
        model, payload = model_from_checkpoint(run_dir / LAST)
        preprocess = Preprocess.from_dict(payload.get("preprocess"), str(run_dir / LAST))
        images = preprocess(list(image_paths))
        maps = activation_maps(model, images)
        global_maps[ARMS[arm].label] = maps["global"]
        if "suppression" in maps:
            suppression_maps[f"{ARMS[arm].label} S"] = maps["suppression"]
    if images is None or preprocess is None:
        raise IgoasError("no trained arm to draw activation maps of")
    panel = (2 * preprocess.width, 2 * preprocess.height)
    return plot_activation_comparison(images, {**global_maps, **suppression_maps}, out_path, mean=preprocess.mean,
                                      std=preprocess.std, panel_size=panel)


def _machine(cfg: DictConfig) -> dict[str, Any]:
    from igoas.speed import cpu_has_native_bf16

    device = _device(cfg)
    return {"device": device, "train_precision": resolve_precision(cfg.train.precision, device),
            "eval_precision": resolve_precision(cfg.eval.precision, device),"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# ----------------------------------------------------------------------------- the study
def run_ablation(out_dir: str | os.PathLike[str], seeds: int | Sequence[int] = 3, methods: Sequence[str] | None = None,
                 recipe: str | os.PathLike[str] = DEFAULT_RECIPE, reduced: bool = False, overrides: Iterable[str] = (),
                 stress: StressSettings | None = None, activation_images: int = 4,
                 log: Callable[[str], None] | None = print) -> AblationResult:
    """Train every arm in `methods` (default: all of ARMS) once per seed with `recipe`,
    score and stress-test each, and write the table and figures into `out_dir`.

    `seeds` is a count (seeds 1..n) or a list of seeds. `reduced` shrinks the recipe
    (REDUCED_OVERRIDES) and the stress test (REDUCED_STRESS) to a pipeline check whose
    numbers mean nothing. `overrides` (dotted `key=value`) apply to the recipe before
    the arms' own settings; the synthetic set is rendered into `<out_dir>/data` unless
    they set `data.root`. Re-running with the same arguments reuses every finished run.
    """
    log = log or (lambda message: None)
    out = Path(out_dir).expanduser().absolute()
    seed_list, arms = _seed_list(seeds), _arm_list(methods)
    stress = stress or (REDUCED_STRESS if reduced else STRESS)
    all_overrides = [f"data.root={out / 'data'}", *(REDUCED_OVERRIDES if reduced else ()), *overrides]
    started = time.perf_counter()

    from igoas.data import build_dataset

    recipe_cfg = load_config(recipe, all_overrides)
    dataset = build_dataset(recipe_cfg.data.dataset, recipe_cfg.data.root, **to_dict(recipe_cfg.data.options))
    runs: list[dict[str, Any]] = []
    for seed in seed_list:
        for arm in arms:
            cfg = arm_config(arm, seed, recipe, all_overrides)
            runs.append(_run_one(arm, seed, cfg, out / "runs" / arm / f"seed{seed}", dataset, stress, log))

    summary, mean_stress = _summarize(runs, arms), _mean_stress(runs, arms)
    result = AblationResult(out, arms, seed_list, runs, summary, mean_stress)
    recipe_name = Path(str(recipe)).stem
    result.files["table"] = atomic_write(out / "table.md", lambda handle: handle.write(
        _table_document(summary, arms, seed_list, recipe_name, stress).encode("utf-8")))
    from igoas.viz import plot_robustness

    result.files["stress"] = plot_robustness([r for arm in arms for r in mean_stress[arm]], out / "stress.png")
    first_seed = {arm: out / "runs" / arm / f"seed{seed_list[0]}" for arm in arms}
    result.files["activations"] = plot_activation_figure(first_seed, _example_queries(dataset, activation_images),
                                                         out / "activations.png")
    results_path = out / "results.json"
    result.files["results"] = results_path
    write_json(results_path, {
        "recipe": str(recipe), "reduced": reduced, "overrides": list(overrides), "seeds": seed_list, "arms": {
            arm: {"description": ARMS[arm].description, "model": ARMS[arm].model, "occlusion": ARMS[arm].occlusion,
                  "summary": summary[arm], "stress": mean_stress[arm]} for arm in arms},
        "runs": [{key: run[key] for key in ("arm", "seed", "run_dir", "metrics", "train_seconds", "stress_seconds")}
                 for run in runs],
        "config": _fingerprint(recipe_cfg), "stress_settings": asdict(stress),
        "dataset": {"name": recipe_cfg.data.dataset, "root": str(recipe_cfg.data.root),
                    "train_images": len(dataset.train), "train_ids": dataset.num_train_pids,
                    "queries": len(dataset.query), "gallery": len(dataset.gallery)},
        "machine": _machine(recipe_cfg), "seconds": time.perf_counter() - started,
        "files": {key: str(path) for key, path in result.files.items()},
    })
    log(f"wrote {', '.join(str(path) for path in result.files.values())}")
    return result
