"""Orchestration of the ablation study (`igoas ablation`): pretrained start, one run per
(arm, seed), reuse of finished runs, and the study's outputs.

Resumable across sessions: every finished (arm, seed) leaves a small record (see
`igoas.studies.ablation.records`) in the records folder and in its run folder. A run whose record
matches the recipe is not trained again (its checkpoints need not exist any more), an
interrupted training continues from its last checkpoint, and a folder trained with a
different recipe is reported rather than silently mixed in.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from omegaconf import DictConfig

from igoas.artifacts.run_dir import RunDir
from igoas.compute.distributed import resolve_device
from igoas.compute.runtime import Runtime
from igoas.compute.speed import cpu_has_native_bf16, resolve_precision
from igoas.config import apply_overrides, load_config, to_dict, validate
from igoas.data import build_dataset
from igoas.data.synthetic import read_meta
from igoas.robustness.occlusion_stress import occlusion_stress_test
from igoas.studies.ablation.arms import ARMS, DEFAULT_RECIPE, arm_config, arm_list, seed_list
from igoas.studies.ablation.corrupted import available as corruptions_installed
from igoas.studies.ablation.corrupted import corrupted_evaluation
from igoas.studies.ablation.records import (RUN_RECORD, TRUNK_RECORD, evaluation_curve, final_metrics, mask_activity,
                                            matches, pretrained_identity, query_scores, read_json, record_path,
                                            save_record, trunk_sha256, without_paths)
from igoas.studies.ablation.report import table_document
from igoas.studies.ablation.statistics import check_criteria, mean_curves, mean_stress, paired_bootstrap, summarize
from igoas.studies.fingerprint import as_json, differences, fingerprint, saved_fingerprint
from igoas.studies.pretrain import PRESET, TRUNK_FILE, pretrain
from igoas.training.trainer import train
from igoas.utils.errors import ConfigError, IgoasError
from igoas.utils.fileio import atomic_write, write_json
from igoas.viz import plot_robustness
from igoas.viz.ablation_figures import plot_activation_figure, plot_study_curves

# Shrinks any recipe to a pipeline check of seconds per arm (`reduced=True`, the test suite):
# two epochs (fixbase, then everything), evaluated after each, so every criterion is computed.
REDUCED_OVERRIDES = ("data.options.size=tiny", "data.height=64", "data.width=32", "data.batch_size=8",
                     "train.epochs=2", "train.fixbase_epochs=1", "optim.warmup_epochs=0", "eval.every=1",
                     "eval.batch_size=64", "train.log_every=1")
REDUCED_PRETRAIN = ("data.options.size=tiny", "data.height=64", "data.width=32", "data.batch_size=8",
                    "train.epochs=1", "optim.warmup_epochs=0", "eval.batch_size=64")
BOOTSTRAP_ARMS = ("igoas", "baseline")
BOOTSTRAP_SCORES = ("r1", "ap")

# Extra evaluations of every finished run, by name: f(checkpoint, dataset, config, reduced=)
# -> {metric: value in percent}; `reduced` asks for the pipeline check's small version.
# "corrupted" is the corruption benchmark (its "mAP" fills the table's corrupted column),
# registered where the `corruptions` extra is installed; records without an evaluation are
# completed on the next run while their checkpoints are still there.
Evaluation = Callable[..., Mapping[str, float]]
EVALUATIONS: dict[str, Evaluation] = {"corrupted": corrupted_evaluation} if corruptions_installed() else {}


@dataclass(frozen=True)
class StressSettings:
    """The occlusion stress test run on every trained model (see `igoas.robustness.occlusion_stress`).

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
    """What a study produced: per-run records, per-arm summaries, the criteria, the
    bootstrap of IGOAS against the baseline, and the files written.

    `summary[arm][query_set][metric]` holds mean, std (over seeds, n-1; 0 for one seed),
    min, max and the per-seed values, in percent.
    """

    out_dir: Path
    arms: list[str]
    seeds: list[int]
    runs: list[dict[str, Any]]
    summary: dict[str, dict[str, dict[str, Any]]]
    stress: dict[str, list[dict[str, Any]]]
    criteria: dict[str, Any] = field(default_factory=dict)
    bootstrap: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


# ----------------------------------------------------------------------------- one run
def _recipe_changes(run_dir: Path, cfg: DictConfig) -> list[str]:
    """How the run folder's saved config and its trunk differ from `cfg` (empty: same recipe,
    or nothing trained there yet). The trunk is compared by content, not by path."""
    saved_file = RunDir(run_dir).config
    if not saved_file.is_file():
        return []
    saved = saved_fingerprint(saved_file)
    changes = differences(without_paths(saved), without_paths(fingerprint(cfg)))
    started_from, wanted = _run_trunk(run_dir), trunk_sha256(cfg.model.pretrained)
    if started_from is not None and started_from != wanted:
        changes.append(f"pretrained trunk SHA-256: {started_from[:12]}... -> {(wanted or 'none')[:12]}...")
    return changes


def _check_same_recipe(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse to continue or reuse a run folder that was trained with another config or trunk."""
    changes = _recipe_changes(run_dir, cfg)
    if changes:
        raise ConfigError(f"{run_dir} was trained with a different recipe ({'; '.join(changes[:5])}); "
                          "delete that folder to retrain it, or give the study another --out folder")


def _run_trunk(run_dir: Path) -> str | None:
    """The trunk SHA-256 saved when the run started (None: not saved, or no pretrained file)."""
    saved = read_json(run_dir / TRUNK_RECORD)
    if not isinstance(saved, dict):
        return None
    return saved.get("sha256") or None


def _finished_checkpoint(run_dir: Path, cfg: DictConfig) -> Path | None:
    """The run's last checkpoint when training finished there with this recipe and trunk, else
    None: extra evaluations and figures never score a half-trained or foreign model."""
    files = RunDir(run_dir)
    if not (files.final_metrics.is_file() and files.last_checkpoint.is_file()) or _recipe_changes(run_dir, cfg):
        return None
    return files.last_checkpoint


def _train_arm(cfg: DictConfig, run_dir: Path, log: Callable[[str], None]) -> float | None:
    """Train (or finish training) one run; its training seconds summed over every process that
    trained it (`TrainResult.train_seconds`), or None when it had already finished."""

    _check_same_recipe(run_dir, cfg)
    if RunDir(run_dir).final_metrics.is_file():
        return None
    resume = run_dir if RunDir(run_dir).last_checkpoint.is_file() else None
    log(f"{'continuing' if resume else 'training'} {run_dir}")
    if resume is None:  # the trunk's identity as this run reads it, whatever happens to the file later
        write_json(run_dir / TRUNK_RECORD, pretrained_identity(cfg.model.pretrained) or {})
    result = train(cfg, resume=resume, overwrite=resume is None)  # a run killed before its first checkpoint
    if not result.finished:
        raise IgoasError(f"{run_dir}: training stopped at iteration {result.iteration} before the last epoch "
                         "(train.stop_after_iters?); run the same study command again to continue it")
    return result.train_seconds


def _extra_evaluations(record: dict[str, Any], checkpoint: Path | None, dataset: Any, cfg: DictConfig,
                       log: Callable[[str], None], reduced: bool) -> bool:
    """Run the registered evaluations the record lacks (when the finished run's checkpoint is
    there); True if any ran."""
    done = record.setdefault("evaluations", {})
    missing = [name for name in EVALUATIONS if name not in done]
    if not missing or checkpoint is None:
        return False
    for name in missing:
        log(f"{record['arm']} seed {record['seed']}: evaluation {name!r}")
        scores = EVALUATIONS[name](checkpoint, dataset, cfg, reduced=reduced)
        done[name] = {metric: float(value) for metric, value in scores.items()}
    return True


def _run_one(arm: str, seed: int, cfg: DictConfig, run_dir: Path, record_file: Path, dataset: Any,
             stress: StressSettings, log: Callable[[str], None], reduced: bool) -> dict[str, Any]:
    """Train, score and stress-test one (arm, seed), or read back the record of a finished one."""

    last = RunDir(run_dir).last_checkpoint

    wanted, stress_settings = fingerprint(cfg), as_json(asdict(stress))
    trunk = trunk_sha256(cfg.model.pretrained)
    for candidate in (record_file, run_dir / RUN_RECORD):
        saved = read_json(candidate)
        if matches(saved, wanted, stress_settings, trunk):
            log(f"{arm} seed {seed}: finished before, reusing {candidate}")
            if _extra_evaluations(saved, _finished_checkpoint(run_dir, cfg), dataset, cfg, log, reduced) \
                    or candidate != record_file:
                save_record(saved, *dict.fromkeys((record_file, run_dir / RUN_RECORD)))
            return saved
    cfg.train.output_dir = str(run_dir)
    train_seconds = _train_arm(cfg, run_dir, log)
    started = time.perf_counter()
    device = str(resolve_device(cfg.train.device))
    precision = resolve_precision(cfg.eval.precision, device)
    # Scored like the run's own evaluation, so the stress test's area-0 point is its holistic score.
    result = occlusion_stress_test({arm: last}, dataset, stress.areas, stress.positions,
                                   occluder=stress.occluder, seed=stress.seed, query_set=stress.query_set,
                                   batch_size=stress.batch_size, num_workers=cfg.eval.num_workers,
                                   runtime=Runtime(torch.device(device), precision), metric=cfg.eval.metric, flip=cfg.eval.flip)
    record = {"arm": arm, "seed": seed, "metrics": final_metrics(run_dir), "curve": evaluation_curve(run_dir),
              "mask_activity": mask_activity(run_dir),
              "per_query": query_scores(last, dataset, cfg, device, precision),
              "stress": [asdict(r) for r in result.records], "evaluations": {},
              "pretrained": _started_from(run_dir, cfg), "train_seconds": train_seconds,
              "stress_seconds": time.perf_counter() - started, "machine": machine(cfg), "config": wanted,
              "stress_settings": stress_settings}
    _extra_evaluations(record, _finished_checkpoint(run_dir, cfg), dataset, cfg, log, reduced)
    save_record(record, run_dir / RUN_RECORD, record_file)
    scores = "  ".join(f"{name} R1 {m['R1']:.1f} mAP {m['mAP']:.1f}" for name, m in record["metrics"].items())
    log(f"{arm} seed {seed}: {scores}")
    return record


def _started_from(run_dir: Path, cfg: DictConfig) -> dict[str, str] | None:
    """The pretrained identity saved when the run started; for a run started before that file
    existed, the file's identity now (`_check_same_recipe` saw no saved hash to compare)."""
    saved = read_json(run_dir / TRUNK_RECORD)
    if isinstance(saved, dict):
        return saved or None
    return pretrained_identity(cfg.model.pretrained)


# ----------------------------------------------------------------------------- set-up
def ensure_pretrained(cfg: DictConfig, overrides: Iterable[str] = (), log: Callable[[str], None] = print) -> None:
    """Train the synthetic-pretrained trunk the recipe names when its file is missing
    (a `trunk.pth` path: `igoas pretrain` into that folder)."""

    pretrained = cfg.model.pretrained
    if isinstance(pretrained, str) and not Path(pretrained).is_file():
        if Path(pretrained).name != TRUNK_FILE:
            raise ConfigError(f"model.pretrained={pretrained}: no such file")
        backbone = load_config(PRESET, list(overrides)).model.backbone
        if backbone != cfg.model.backbone:  # hours of pretraining for a trunk the runs cannot load
            raise ConfigError(f"model.pretrained={pretrained} is missing and `igoas pretrain` would make a "
                              f"{backbone} trunk for this {cfg.model.backbone} recipe; make it first: igoas pretrain "
                              f"--out {Path(pretrained).parent} model.backbone={cfg.model.backbone}")
        pretrain(Path(pretrained).parent, overrides=overrides, log=log)


def benchmark_statistics(root: Path) -> dict[str, Any] | None:
    """Per split of a rendered synthetic set: images and the share occluded (criterion C5)."""

    meta = read_meta(root)
    if meta is None:
        return None
    splits: dict[str, list[bool]] = {}
    for record in meta["images"].values():
        splits.setdefault(record["split"], []).append(record["occluder"] is not None)
    return {split: {"images": len(flags), "occluded_share": sum(flags) / len(flags)} for split, flags in splits.items()}


def machine(cfg: DictConfig) -> dict[str, Any]:
    """Where a study ran: device, precisions, CPU, threads, library versions."""

    device = str(resolve_device(cfg.train.device))
    return {"device": device, "train_precision": resolve_precision(cfg.train.precision, device),
            "eval_precision": resolve_precision(cfg.eval.precision, device), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _bootstrap(runs: Sequence[Mapping[str, Any]], seeds: Sequence[int], resamples: int) -> dict[str, Any]:
    """IGOAS against the baseline per query set and score, when both have every seed."""
    by_key = {(run["arm"], run["seed"]): run for run in runs}
    treatment, control = BOOTSTRAP_ARMS
    if not all((arm, seed) in by_key and by_key[(arm, seed)].get("per_query") for arm in BOOTSTRAP_ARMS
               for seed in seeds):
        return {}
    return {query_set: {score: paired_bootstrap([by_key[(treatment, s)]["per_query"][query_set] for s in seeds],
                                                [by_key[(control, s)]["per_query"][query_set] for s in seeds],
                                                score, resamples=resamples)
                        for score in BOOTSTRAP_SCORES}
            for query_set in by_key[(treatment, seeds[0])]["per_query"]}


def _example_queries(dataset: Any, count: int) -> list[str]:
    """`count` occluded queries of different identities, spread over the query list."""
    import numpy as np

    firsts = list({sample.pid: sample for sample in sorted(dataset.query, key=lambda s: s.path)}.values())
    picks = np.linspace(0, len(firsts) - 1, num=min(count, len(firsts))).round().astype(int)
    return [firsts[index].path for index in dict.fromkeys(picks.tolist())]


# ----------------------------------------------------------------------------- the study
def _recipe_config(recipe: str | os.PathLike[str], out: Path, reduced: bool, overrides: Iterable[str]) -> DictConfig:
    """The recipe with the study's folders (set on the config, so YAML never reads a path),
    the reduced settings and then the user's overrides."""
    cfg = load_config(recipe)
    cfg.data.root = str(out / "data")
    if reduced:
        cfg = apply_overrides(cfg, REDUCED_OVERRIDES)
        cfg.model.pretrained = str(out / "pretrain" / "trunk.pth")
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def run_ablation(out_dir: str | os.PathLike[str], seeds: int | Sequence[int] = 3, methods: Sequence[str] | None = None,
                 recipe: str | os.PathLike[str] = DEFAULT_RECIPE, reduced: bool = False, overrides: Iterable[str] = (),
                 stress: StressSettings | None = None, records_dir: str | os.PathLike[str] | None = None,
                 activation_images: int = 4, bootstrap_resamples: int = 10_000,
                 log: Callable[[str], None] | None = print) -> AblationResult:
    """Train every arm in `methods` (default: all of ARMS) once per seed with `recipe`,
    score and stress-test each, check the criteria, bootstrap IGOAS against the baseline,
    and write the table and figures into `out_dir` (and `records_dir`).

    `seeds` is a count (seeds 1..n) or a list of seeds. `reduced` shrinks the recipe
    (REDUCED_OVERRIDES, a tiny pretraining) and the stress test (REDUCED_STRESS) to a
    pipeline check whose numbers mean nothing. `overrides` (dotted `key=value`) apply to
    the recipe before the arms' own settings; the synthetic set is rendered into
    `<out_dir>/data` unless they set `data.root`. Per-run records go to `records_dir`
    (default `<out_dir>/records`); re-running reuses every run with a matching record.
    """
    log = log or (lambda message: None)
    out = Path(out_dir).expanduser().absolute()
    records = Path(records_dir).expanduser().absolute() if records_dir else out / "records"
    seeds_, arms = seed_list(seeds), arm_list(methods)
    stress = stress or (REDUCED_STRESS if reduced else STRESS)
    started = time.perf_counter()

    recipe_cfg = _recipe_config(recipe, out, reduced, overrides)
    if recipe_cfg.eval.rerank or recipe_cfg.eval.query_expansion:
        # the per-query scores of the bootstrap are plain-distance scores, like the table's must be
        raise ConfigError("the study scores with plain distances: drop eval.rerank and eval.query_expansion")
    ensure_pretrained(recipe_cfg, REDUCED_PRETRAIN if reduced else (), log)
    dataset = build_dataset(recipe_cfg.data.dataset, recipe_cfg.data.root, **to_dict(recipe_cfg.data.options))
    runs = [_run_one(arm, seed, arm_config(arm, seed, recipe_cfg), out / "runs" / arm / f"seed{seed}",
                     record_path(records, arm, seed), dataset, stress, log, reduced)
            for seed in seeds_ for arm in arms]

    summary, stress_means, curves = summarize(runs, arms), mean_stress(runs, arms), mean_curves(runs, arms)
    occluded_shares = benchmark_statistics(Path(recipe_cfg.data.root))
    criteria = check_criteria(runs, arms, seeds_, recipe_cfg.train.epochs,
                              masked_arms=[arm for arm in arms if ARMS[arm].occlusion != "none"],
                              occluded_shares=occluded_shares)
    bootstrap = _bootstrap(runs, seeds_, bootstrap_resamples) if set(BOOTSTRAP_ARMS) <= set(arms) else {}
    result = AblationResult(out, arms, seeds_, runs, summary, stress_means, criteria, bootstrap)
    recipe_name = Path(str(recipe)).stem
    document = {
        "recipe": str(recipe), "reduced": reduced, "overrides": list(overrides), "seeds": seeds_, "arms": {
            arm: {"description": ARMS[arm].description, "model": ARMS[arm].model, "occlusion": ARMS[arm].occlusion,
                  "summary": summary[arm], "stress": stress_means[arm], "curves": curves[arm]} for arm in arms},
        "criteria": criteria, "bootstrap": bootstrap,
        "runs": [{key: run.get(key) for key in ("arm", "seed", "metrics", "train_seconds", "stress_seconds")}
                 for run in runs],
        "config": fingerprint(recipe_cfg), "stress_settings": asdict(stress),
        "dataset": {"name": recipe_cfg.data.dataset, "train_images": len(dataset.train),
                    "train_ids": dataset.num_train_pids, "queries": len(dataset.query),
                    "gallery": len(dataset.gallery), "occluded_shares": occluded_shares},
        "machine": machine(recipe_cfg), "seconds": time.perf_counter() - started,
    }
    text = table_document(summary, arms, seeds_, recipe_name, stress, criteria, bootstrap)

    result.files["table"] = atomic_write(out / "table.md", lambda handle: handle.write(text.encode("utf-8")))
    result.files["results"] = write_json(out / "results.json", document)
    result.files["curves"] = plot_study_curves(curves, out / "curves.png")
    result.files["stress"] = plot_robustness([r for arm in arms for r in stress_means[arm]], out / "stress.png")
    first_seed = {arm: _finished_checkpoint(out / "runs" / arm / f"seed{seeds_[0]}",
                                            arm_config(arm, seeds_[0], recipe_cfg)) for arm in arms}
    if all(path is not None for path in first_seed.values()):
        result.files["activations"] = plot_activation_figure(
            first_seed, {arm: ARMS[arm].label for arm in arms}, _example_queries(dataset, activation_images),
            out / "activations.png")
    else:
        log("activations.png not drawn: the first seed's finished checkpoints are not all in this --out folder")
    if records != out:  # the committed copy of the study's outputs, beside the records
        for path in list(result.files.values()):
            content = path.read_bytes()
            atomic_write(records / path.name, lambda handle, data=content: handle.write(data))
    log(f"wrote {', '.join(str(path) for path in result.files.values())}")
    return result
