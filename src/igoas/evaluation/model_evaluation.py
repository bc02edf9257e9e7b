"""Embeddings of a dataset split, and the evaluation of a model on a dataset's query sets.

Used by training (periodic evaluation), `igoas eval`, the demo and the ablation; the
embedding itself is `igoas.evaluation.embedding.embed`. In a distributed run every process
embeds its own contiguous share of the images and the shares are gathered, in order,
before ranking.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig
from torch import nn

from igoas.artifacts.checkpoint import model_from_checkpoint
from igoas.compute.runtime import Runtime
from igoas.config import EvalConfig, apply_overrides, config_from_dict, load_config, to_dict, validate
from igoas.data import build_dataset
from igoas.data.base import ReIDDataset, Sample
from igoas.evaluation import RankResult, evaluate_features
from igoas.evaluation.embedding import embed
from igoas.imaging.preprocess import PreprocessSource
from igoas.retrieval.features_file import Features
from igoas.utils.errors import ConfigError, IgoasError

_DEFAULT_EVAL = EvalConfig()


def embed_samples(model: nn.Module, samples: Sequence[Sample], preprocess: PreprocessSource | None,
                  eval_config: EvalConfig | DictConfig | None = None,
                  runtime: Runtime | None = None, progress: bool = False, name: str = "images") -> Features:
    """`embed` with the batch size, workers and flip of an `eval` config section;
    `progress` shows it as "embedding NAME (N images)"."""
    eval_config = eval_config or _DEFAULT_EVAL
    return embed(model, samples, preprocess, runtime, flip=eval_config.flip, batch_size=eval_config.batch_size,
                 num_workers=eval_config.num_workers, progress=progress,
                 progress_label=f"embedding {name} ({len(samples)} images), batches")


def embed_dataset(model: nn.Module, dataset: ReIDDataset, preprocess: PreprocessSource | None,
                  eval_config: EvalConfig | DictConfig | None = None,
                  runtime: Runtime | None = None, progress: bool = False) -> dict[str, Features]:
    """Embeddings of the gallery ("gallery"), the main queries ("query") and every extra
    query set of `dataset` (e.g. "holistic")."""
    splits = {"gallery": dataset.gallery, "query": dataset.query, **dict(getattr(dataset, "extra_queries", {}) or {})}
    return {name: embed_samples(model, samples, preprocess, eval_config, runtime, progress, name)
            for name, samples in splits.items()}


def rank_query_sets(features: Mapping[str, Features], eval_config: EvalConfig | DictConfig | None = None,
                    progress: bool = False) -> dict[str, RankResult]:
    """CMC/mAP/mINP of every query set in `features` against its "gallery" entry."""
    eval_config = eval_config or _DEFAULT_EVAL
    gallery = features["gallery"]
    return {name: evaluate_features(
                queries.embeddings, gallery.embeddings, queries.pids, gallery.pids, queries.camids, gallery.camids,
                metric=eval_config.metric, max_rank=eval_config.max_rank, rerank=eval_config.rerank,
                rerank_params=(eval_config.k1, eval_config.k2, eval_config.lambda_value),
                query_expansion=eval_config.query_expansion, query_expansion_alpha=eval_config.query_expansion_alpha,
                fprs=tuple(eval_config.fprs), progress=progress,
                progress_label=f"ranking {name} against the gallery ({eval_config.metric}), queries")
            for name, queries in features.items() if name != "gallery"}


def evaluate_model(model: nn.Module, dataset: ReIDDataset, eval_config: EvalConfig | DictConfig | None = None,
                   preprocess: PreprocessSource | None = None,
                   runtime: Runtime | None = None, progress: bool = False) -> dict[str, RankResult]:
    """Rank the gallery for the main query set (key "query") and every extra query set of
    `dataset` (e.g. "holistic"), sharing one pass over the gallery.

    `preprocess` (height, width, mean, std) is the input preparation the model expects,
    e.g. a checkpoint's `preprocess` entry. In a distributed run (`runtime.ctx`) every
    process embeds its share; only the main process ranks (the others get {}). `progress`
    shows embedding and ranking as bars on a terminal, else as a few log lines.
    """
    if preprocess is None:
        raise IgoasError("evaluate_model needs the input preprocessing: pass preprocess={height, width, mean, std} "
                         "(a checkpoint's 'preprocess' entry)")
    main = runtime is None or runtime.ctx is None or runtime.ctx.is_main
    features = embed_dataset(model, dataset, preprocess, eval_config, runtime, progress and main)
    if not main:
        return {}
    return rank_query_sets(features, eval_config, progress)


def eval_datasets(cfg: DictConfig, train_dataset: ReIDDataset | None = None) -> dict[str, ReIDDataset]:
    """The datasets a run config evaluates on: each of `data.targets` (with its
    `data.target_options`, where a `root` entry overrides `data.root`), or the training
    dataset itself when there are none."""

    data = cfg.data
    if not data.targets:
        dataset = train_dataset or build_dataset(data.dataset, data.root, **to_dict(data.options))
        return {data.dataset: dataset}
    options = to_dict(data.target_options)
    unknown = sorted(set(options) - set(data.targets))
    if unknown:
        raise ConfigError(f"data.target_options names {unknown}, which are not in data.targets {list(data.targets)}")
    datasets = {}
    for name in data.targets:
        # A target may live under its own root ("root" among its options).
        target = dict(options.get(name) or {})
        datasets[name] = build_dataset(name, target.pop("root", data.root), **target)
    return datasets


def evaluate_datasets(model: nn.Module, datasets: Mapping[str, ReIDDataset], eval_config: EvalConfig | DictConfig | None = None,
                      preprocess: PreprocessSource | None = None, runtime: Runtime | None = None,
                      progress: bool = False) -> dict[str, RankResult]:
    """`evaluate_model` on each dataset; with several, result names become "dataset/query set"."""
    results: dict[str, RankResult] = {}
    for name, dataset in datasets.items():
        found = evaluate_model(model, dataset, eval_config, preprocess, runtime, progress)
        prefix = f"{name}/" if len(datasets) > 1 else ""
        results.update({prefix + key: value for key, value in found.items()})
    return results


def evaluate_checkpoint(checkpoint: str | os.PathLike[str] | Mapping[str, Any],
                        config: DictConfig | str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                        progress: bool = False) -> tuple[dict[str, RankResult], dict[str, Any], Any]:
    """Evaluate a checkpoint file on the datasets of `config` (a config, YAML path or preset;
    default: the config saved in the checkpoint) with `overrides` applied last.

    Returns the results per query set, the checkpoint payload and the config used. Runs on
    `train.device` with `eval.precision`, using the checkpoint's own preprocessing.
    """

    model, payload = model_from_checkpoint(checkpoint)
    if config is None:
        if not isinstance(payload.get("config"), Mapping):
            raise ConfigError(f"{checkpoint}: holds no run config; pass a config naming the dataset to evaluate on")
        cfg = config_from_dict(dict(payload["config"]), str(checkpoint))
    else:
        cfg = config if hasattr(config, "data") else load_config(config)
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    if not payload.get("preprocess"):
        raise ConfigError(f"{checkpoint}: no 'preprocess' entry (input size, mean, std); re-save it with igoas")
    runtime = Runtime.resolve(cfg.train.device, cfg.eval.precision, cfg.train.channels_last)
    results = evaluate_datasets(model, eval_datasets(cfg), cfg.eval, payload, runtime, progress)
    return results, payload, cfg


def results_document(results: Mapping[str, RankResult], **context: Any) -> dict[str, Any]:
    """The JSON written by `igoas eval`, training and the demo: the main query set's R1 and
    mAP at the top (percent), every query set in full (CMC included), and `context`."""
    main = next(iter(results.values()), None)
    summary = main.to_dict() if main is not None else {}
    return {**context, "R1": summary.get("R1"), "mAP": summary.get("mAP"),
            "query_sets": {name: result.to_dict() for name, result in results.items()}}


def percent_summary(results: Mapping[str, RankResult]) -> dict[str, dict[str, float]]:
    """Per query set, R1/R5/R10/mAP/mINP in percent (what logs and tables show)."""
    keep = ("R1", "R5", "R10", "mAP", "mINP")
    return {name: {key: value for key, value in result.to_dict().items() if key in keep}
            for name, result in results.items()}
