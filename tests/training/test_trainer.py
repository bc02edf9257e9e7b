"""The training engine: schedules, fixbase, RNG state, exact resume, NaN stop, checkpoint
errors, feature extraction and the eval command, on the tiny synthetic set."""
from __future__ import annotations

import json
import pickle
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from igoas.cli import main
from igoas.config import load_config
from igoas.artifacts.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from igoas.evaluation.embedding import embed
from igoas.training.optim import lr_factor, open_layers
from igoas.training.rng import capture_rng_state, restore_rng_state, state_for_rank
from igoas.utils.seeding import seed_everything
from igoas.training.trainer import TrainingDiverged, train
from igoas.utils.errors import CheckpointError, ConfigError
from igoas.model.losses import LossConfig, compute_losses
from igoas.model import build_model
from igoas.compute.speed import cpu_has_native_bf16

EPOCHS, BATCH = 2, 8


def tiny_run(root: Path, trunk: Path, out: Path, *extra: str):
    """A ResNet-18 run at 32x16 on the tiny synthetic set: 4 iterations per epoch, the first
    epoch a fixbase epoch (so `model.pretrained` names a trunk file)."""
    return load_config(None, [
        "data.dataset=synthetic", f"data.root={root}", "data.height=32", "data.width=16",
        f"data.batch_size={BATCH}", "data.num_workers=0", "model.backbone=resnet18", f"model.pretrained={trunk}",
        f"train.epochs={EPOCHS}", "train.fixbase_epochs=1", "train.device=cpu", "train.precision=fp32",
        "train.deterministic=true", "train.log_every=1", "train.progress_bar=false", f"train.output_dir={out}",
        "optim.grad_clip=5.0", "optim.warmup_epochs=0.5", "eval.every=1", "eval.num_workers=0", *extra,
    ])


@pytest.fixture(scope="module")
def finished_run(synthetic_root: Path, random_trunk: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run; other tests compare against it or use its checkpoints."""
    out = tmp_path_factory.mktemp("engine") / "uninterrupted"
    result = train(tiny_run(synthetic_root, random_trunk, out))
    assert result.finished and result.iteration == EPOCHS * 4
    return out


# ----------------------------------------------------------------------------- schedules
def _settings(**values):
    cfg = load_config(None, [f"optim.{key}={value}" for key, value in values.items()])
    return cfg.optim


def test_multi_step_schedule_equals_per_epoch_multisteplr() -> None:
    cfg = _settings(milestones="[2,4]", gamma=0.1)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 4], gamma=0.1)
    iters = 3
    for epoch in range(6):
        for batch in range(iters):
            assert lr_factor(epoch * iters + batch, iters, cfg, 6) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()


def test_warmup_is_linear_and_cosine_ends_at_its_floor() -> None:
    cfg = _settings(schedule="cosine", warmup_epochs=2, warmup_start_factor=0.1, min_lr_factor=0.05)
    iters, epochs = 10, 12
    factors = [lr_factor(step, iters, cfg, epochs) for step in range(iters * epochs + 1)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[10] == pytest.approx(0.55)  # half-way through the warm-up
    assert factors[20] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(factors[20:], factors[21:]))


# ----------------------------------------------------------------------------- fixbase
def test_fixbase_trains_only_the_new_layers_and_freezes_bn_statistics() -> None:
    torch.manual_seed(0)
    model = build_model("igoas", num_classes=5, backbone="resnet18")
    model.train()
    open_layers(model, model.fixbase_modules)
    assert model.training  # the network itself stays in training mode: IGO keeps running
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=5e-4)
    output = model(torch.randn(4, 3, 32, 16), progress=0.0, generator=torch.Generator().manual_seed(0))
    assert output.occluded_fraction > 0
    compute_losses(output, torch.tensor([0, 1, 2, 3]), LossConfig()).total.backward()
    optimizer.step()
    after = model.state_dict()
    for name, child in model.named_children():
        is_open = name in model.fixbase_modules
        assert child.training == is_open, name
        assert all(p.requires_grad == is_open for p in child.parameters()), name
        changed = [k for k in before if k.startswith(name + ".") and not torch.equal(before[k], after[k])]
        # frozen: no weight, no BatchNorm statistic moved; open: something learned
        assert bool(changed) == is_open, (name, changed)
    assert "concat_classifier" not in model.fixbase_modules and "global_stage4" not in model.fixbase_modules
    open_layers(model, None)
    assert all(p.requires_grad for p in model.parameters()) and all(m.training for m in model.modules())
    with pytest.raises(ConfigError, match="no_such_layer"):
        open_layers(model, ["no_such_layer"])


@pytest.mark.parametrize("pretrained", [True, False])
def test_fixbase_freezes_the_backbone_only_when_it_is_pretrained(pretrained: bool, synthetic_root: Path,
                                                                 random_trunk: Path, tmp_path: Path) -> None:
    """A random backbone frozen for the fixbase epochs would learn nothing: without
    pretrained weights those epochs are skipped, and the log says so."""
    out = tmp_path / "run"
    cfg = tiny_run(synthetic_root, random_trunk, out, "train.stop_after_iters=1", "eval.every=0",
                   *([] if pretrained else ["model.pretrained=false"]))
    train(cfg)
    stem = load_checkpoint(out / "checkpoints" / "last.pth")["model"]["stem.0.weight"]
    seed_everything(1)  # the trainer's own draw of the initial weights (train.seed)
    start = build_model(num_classes=12, backbone="resnet18", pretrained=str(random_trunk) if pretrained else False)
    assert torch.equal(stem, start.state_dict()["stem.0.weight"]) == pretrained
    log = (out / "train.log").read_text()
    assert ("epochs 1-1: training only" in log) == pretrained
    assert ("train.fixbase_epochs=1 skipped: model.pretrained is false" in log) == (not pretrained)


@pytest.mark.slow
def test_resuming_a_finished_run_says_it_is_finished(finished_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    result = train(resume=copy)
    log = (copy / "train.log").read_text()
    assert result.finished and "the run finished at epoch 2 of 2: nothing is left to train" in log
    assert "continuing from epoch 3" not in log


# ----------------------------------------------------------------------------- RNG state
def test_rng_state_survives_a_weights_only_round_trip(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(3)
    state = capture_rng_state({"occlusion": generator})
    torch.save(state, tmp_path / "rng.pth")

    def draws() -> tuple:
        return (random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=generator)))

    first = draws()
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True), {"occlusion": generator})
    assert draws() == first


def test_each_process_restores_its_own_random_streams() -> None:
    states = [{"rank": rank} for rank in range(3)]
    assert state_for_rank(states[0], states, 3, 2, 3) == (states[2], False, [])  # its own, exactly
    assert state_for_rank(states[0], None, 1, 0, 1) == (states[0], False, [])  # single-process checkpoints
    # earlier multi-process checkpoints hold rank 0's streams only: the others are derived afresh
    assert state_for_rank(states[0], None, 3, 0, 3)[:2] == (states[0], False)
    state, derive, notes = state_for_rank(states[0], None, 3, 1, 3)
    assert derive and "rank 0's random streams only" in notes[0]
    for rank in (0, 1):  # another number of processes: every process derives its streams afresh
        state, derive, notes = state_for_rank(states[0], states, 3, rank, 2)
        assert state is states[0] and derive and "saved by 3 process(es), continuing with 2" in notes[0]


# ----------------------------------------------------------------------------- exact resume
@pytest.mark.slow
def test_resume_after_a_kill_mid_epoch_is_bit_identical(finished_run: Path, synthetic_root: Path, random_trunk: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import igoas.training.trainer as trainer

    out = tmp_path / "interrupted"
    # a clean early stop, resumable
    stopped = train(tiny_run(synthetic_root, random_trunk, out, "train.stop_after_iters=2", "train.checkpoint_every_iters=3"))
    assert not stopped.finished and load_checkpoint(out / "checkpoints/last.pth")["iteration"] == 2
    first_seconds = load_checkpoint(out / "checkpoints/last.pth")["train_seconds"]
    assert 0 < first_seconds <= stopped.train_seconds

    # then a kill during iteration 8: the last checkpoint is from iteration 6 (mid-epoch),
    # iteration 7 ran and was logged but is lost
    calls = {"n": 0}

    def killed(output, labels, config, **options):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return compute_losses(output, labels, config, **options)

    monkeypatch.setattr(trainer, "compute_losses", killed)
    with pytest.raises(KeyboardInterrupt):
        train(resume=out)
    monkeypatch.undo()
    kept = load_checkpoint(out / "checkpoints/last.pth")
    assert (kept["iteration"], kept["epoch"], kept["batch"]) == (6, 1, 2)
    assert kept["train_seconds"] > first_seconds  # the first process's time is carried on
    started = time.perf_counter()
    assert main(["train", "--resume", str(out)]) == 0
    last_process = time.perf_counter() - started
    # the training time of the whole run: the last process's time on top of what the kept checkpoint held
    total = json.loads((out / "metrics.json").read_text())["train_seconds"]
    assert kept["train_seconds"] < total <= kept["train_seconds"] + last_process + 0.1

    reference, resumed = (load_checkpoint(run / "checkpoints/last.pth") for run in (finished_run, out))
    assert resumed["iteration"] == reference["iteration"] == EPOCHS * 4
    for key, tensor in reference["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    for index, state in reference["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], resumed["optimizer"]["state"][index]["exp_avg"])
    assert resumed["metrics"] == reference["metrics"]

    # the logs read like one uninterrupted run
    for name in ("train_log.jsonl", "metrics.jsonl"):
        records = [json.loads(line) for line in (out / name).read_text().splitlines()]
        expected = [json.loads(line) for line in (finished_run / name).read_text().splitlines()]
        assert [r["iteration"] for r in records] == [r["iteration"] for r in expected]
    first = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert {"epoch", "iteration", "lr", "loss", "id_weights", "occluded_fraction", "images_per_s"} <= set(first)
    assert {"id_global", "id_suppression", "id_concat", "mask_suppression", "total"} <= set(first["loss"])
    assert any((out / "tensorboard").iterdir()) and (out / "config.yaml").is_file() and (out / "train.log").is_file()


def test_a_run_shorter_than_the_igo_schedule_says_so(finished_run: Path) -> None:
    assert f"warning: the IGO schedule does not fit {EPOCHS} epochs" in (finished_run / "train.log").read_text()


def _same_weights(run: Path, reference: Path) -> bool:
    ours, theirs = (load_checkpoint(folder / "checkpoints/last.pth")["model"] for folder in (run, reference))
    return all(torch.equal(tensor, ours[key]) for key, tensor in theirs.items())


def _evaluations(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_stop_on_an_epoch_boundary_ends_the_epoch_first(finished_run: Path, synthetic_root: Path, random_trunk: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "boundary"
    stopped = train(tiny_run(synthetic_root, random_trunk, out, "train.stop_after_iters=4"))  # the last batch of epoch 1
    payload = load_checkpoint(out / "checkpoints/last.pth")
    assert not stopped.finished and (payload["epoch"], payload["batch"], payload["iteration"]) == (1, 0, 4)
    assert [e["epoch"] for e in _evaluations(out)] == [1] and (out / "checkpoints/best.pth").is_file()
    assert payload["best"]["iteration"] == 4

    # A checkpoint as earlier versions wrote it: epoch 0, batch 4, the epoch's evaluation
    # skipped. One interrupted resume already logged that evaluation, not yet last.pth.
    legacy = tmp_path / "legacy"
    shutil.copytree(out, legacy)
    payload.update(epoch=0, batch=4, metrics={}, best={})
    save_checkpoint(legacy / "checkpoints/last.pth", payload)
    (legacy / "checkpoints/best.pth").unlink()

    for run in (out, legacy):
        assert train(resume=run).finished
        assert _same_weights(run, finished_run), run
        assert _evaluations(run) == _evaluations(finished_run), run  # one record per epoch end, same numbers
        best = load_checkpoint(run / "checkpoints/best.pth")["best"]
        assert best == load_checkpoint(finished_run / "checkpoints/best.pth")["best"]
        assert (run / "metrics.json").is_file()
    assert "those steps run first" in (legacy / "train.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("change", ["process count", "training set size"])
def test_resume_whose_sampler_position_does_not_fit_restarts_the_epoch(change: str, synthetic_root: Path, random_trunk: Path,
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "regrouped"
    train(tiny_run(synthetic_root, random_trunk, out, "train.stop_after_iters=6", "eval.every=0"))
    last = out / "checkpoints/last.pth"
    payload = load_checkpoint(last)
    assert (payload["epoch"], payload["batch"]) == (1, 2)
    if change == "process count":
        payload["world_size"] = payload["sampler"]["world_size"] = 2  # as if written by two processes
    else:  # as if written on a training set with one image more, the same iterations per epoch
        payload["sampler"]["num_samples"] += 1
    save_checkpoint(last, payload)
    result = train(resume=out)
    assert result.finished and result.iteration == EPOCHS * 4  # epoch 2 ran again from its first batch
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == list(range(1, EPOCHS * 4 + 1))
    log = (out / "train.log").read_text()
    assert "restarts from its first batch" in log and ("world_size" if change == "process count" else "num_samples") in log


def test_training_writes_best_and_final_metrics(finished_run: Path) -> None:
    evaluations = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in evaluations] == [1, 2]
    assert set(evaluations[0]) >= {"query", "holistic"} and set(evaluations[0]["query"]) == {
        "R1", "R5", "R10", "mAP", "mINP"}
    best = load_checkpoint(finished_run / "checkpoints/best.pth")
    assert best["best"]["mAP"] == max(e["query"]["mAP"] for e in evaluations)
    assert "optimizer" not in best  # weights for use, not for resuming
    final = json.loads((finished_run / "metrics.json").read_text())
    assert final["mAP"] == pytest.approx(evaluations[-1]["query"]["mAP"])
    assert "protocol" in final["datasets"][0]  # which protocol the reader used, as `igoas eval` records


def test_a_run_killed_before_its_final_metrics_writes_them_on_resume(finished_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "killed_at_the_end"
    shutil.copytree(finished_run, run)
    (run / "metrics.json").unlink()  # the kill came after the final last.pth, before metrics.json
    result = train(resume=run)
    assert result.finished and result.iteration == EPOCHS * 4
    written, reference = (json.loads((folder / "metrics.json").read_text()) for folder in (run, finished_run))
    assert (written["epoch"], written["mAP"], written["R1"]) == (reference["epoch"], reference["mAP"], reference["R1"])
    assert _evaluations(run) == _evaluations(finished_run)  # not logged twice


@pytest.mark.slow
def test_resume_takes_the_best_record_from_best_pth(finished_run: Path, synthetic_root: Path, random_trunk: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "stale_best"
    train(tiny_run(synthetic_root, random_trunk, out, "train.stop_after_iters=2"))
    assert load_checkpoint(out / "checkpoints/last.pth")["best"] == {}
    # as after a stop between an evaluation's best.pth and the last.pth that would follow it
    shutil.copy(finished_run / "checkpoints/best.pth", out / "checkpoints/best.pth")
    written = load_checkpoint(out / "checkpoints/best.pth")["best"]
    assert train(resume=out, overrides=["train.stop_after_iters=3"]).best == written
    assert load_checkpoint(out / "checkpoints/last.pth")["best"] == written
    assert "best.pth's record is the best so far" in (out / "train.log").read_text()

    (out / "checkpoints/best.pth").unlink()  # a record without its weights: the next evaluation writes them
    result = train(resume=out, overrides=["train.stop_after_iters=4"])
    assert result.best["iteration"] == 4 and load_checkpoint(out / "checkpoints/best.pth")["best"] == result.best
    assert "best.pth is missing" in (out / "train.log").read_text()


# ----------------------------------------------------------------------------- NaN stop
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(synthetic_root: Path, random_trunk: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import igoas.training.trainer as trainer

    calls = {"n": 0}

    def poisoned(output, labels, config, **options):
        result = compute_losses(output, labels, config, **options)
        calls["n"] += 1
        if calls["n"] == 3:
            result.total = result.total * float("nan")
        return result

    monkeypatch.setattr(trainer, "compute_losses", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged) as info:
        train(tiny_run(synthetic_root, random_trunk, out, "train.checkpoint_every_iters=2"))
    message = str(info.value)
    assert "nan" in message and "iteration 3" in message and str(out / "checkpoints/last.pth") in message
    kept = load_checkpoint(out / "checkpoints/last.pth")
    assert kept["iteration"] == 2 and all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())


@pytest.mark.parametrize("poisoned_call, where", [(1, "at epoch 1, batch 2, iteration 2"),
                                                   (2, "at the end of epoch 1, iteration 4")])
def test_nonfinite_weights_are_reported_with_epochs_counted_from_one(poisoned_call: int, where: str,
                                                                    synthetic_root: Path, random_trunk: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import igoas.training.trainer as trainer

    calls = {"n": 0}

    def check(module):  # the weight check before each checkpoint: at iterations 2 and 4 (the epoch's end)
        calls["n"] += 1
        return ["bn.running_var"] if calls["n"] == poisoned_call else []

    monkeypatch.setattr(trainer, "nonfinite_tensors", check)
    with pytest.raises(TrainingDiverged, match=where):
        train(tiny_run(synthetic_root, random_trunk, tmp_path / "poisoned", "train.checkpoint_every_iters=2", "eval.every=0"))


# ----------------------------------------------------------------------------- checkpoint errors
class _Arbitrary:
    """An object only a full unpickler can rebuild."""


def test_unsafe_truncated_and_mismatched_checkpoints_are_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"format": "igoas", "payload": _Arbitrary()}, unsafe)
    with pytest.raises(CheckpointError, match="refused to load") as info:
        load_checkpoint(unsafe)
    assert str(unsafe) in str(info.value)

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_checkpoint(truncated)
    assert str(truncated) in str(info.value)

    payload = load_checkpoint(tiny_checkpoint)
    payload["model_spec"] = {**payload["model_spec"], "num_classes": payload["model_spec"]["num_classes"] + 3}
    with pytest.raises(CheckpointError, match=r"shape mismatch.*classifier"):
        model_from_checkpoint(payload)


def test_resume_needs_a_full_training_checkpoint(finished_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(resume=tmp_path)
    run = tmp_path / "weights_only"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(finished_run / "checkpoints/best.pth", run / "checkpoints/last.pth")
    with pytest.raises(CheckpointError, match="lacks optimizer"):
        train(resume=run)


def test_pickled_training_state_is_plain(finished_run: Path) -> None:
    # weights_only loading already passed in load_checkpoint; the sampler and RNG entries
    # must also survive a plain pickle round trip (no torch-specific objects hidden inside).
    payload = load_checkpoint(finished_run / "checkpoints/last.pth")
    assert pickle.loads(pickle.dumps(payload["sampler"])) == payload["sampler"]
    assert payload["rng"]["generators"]["occlusion"].dtype == torch.uint8


# ----------------------------------------------------------------------------- features and eval
def test_embed_with_and_without_flip(synthetic_root: Path, tiny_checkpoint: Path) -> None:
    from igoas.data import build_dataset

    model, payload = model_from_checkpoint(tiny_checkpoint)
    samples = build_dataset("synthetic", synthetic_root).query[:5]
    plain = embed(model, samples, payload, batch_size=2)
    flipped = embed(model, samples, payload, batch_size=2, flip=True)
    assert plain.embeddings.shape == (5, 1024) and plain.paths == [s.path for s in samples]
    assert np.array_equal(plain.pids, [s.pid for s in samples])
    for features in (plain, flipped):  # unit rows, so distances keep one scale with or without flip
        np.testing.assert_allclose(np.linalg.norm(features.embeddings, axis=1), np.ones(5), atol=1e-5)
    assert not np.allclose(plain.embeddings, flipped.embeddings)


def test_eval_command_reproduces_the_training_evaluation(finished_run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval.json"
    assert main(["eval", "--weights", str(finished_run / "checkpoints/best.pth"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "mAP" in printed and "holistic" in printed
    # progress off a terminal: a few timestamped lines per split embedded and per query set ranked
    for step in ("embedding gallery (", "embedding query (", "embedding holistic (",
                 "ranking query against the gallery (euclidean), queries [",
                 "ranking holistic against the gallery (euclidean), queries ["):
        assert step in captured.err, step
    document = json.loads(out.read_text())
    best = load_checkpoint(finished_run / "checkpoints/best.pth")["best"]
    assert document["mAP"] == pytest.approx(best["mAP"], abs=1e-9)
    assert set(document["query_sets"]) == {"query", "holistic"}
    assert len(document["query_sets"]["query"]["cmc"]) == 50


def test_eval_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--weights", str(tmp_path / "missing.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("igoas eval: error:") and "missing.pth" in err and "\n" not in err


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bf16 is emulated on this CPU")
def test_bf16_autocast_trains_on_cpu(synthetic_root: Path, random_trunk: Path, tmp_path: Path) -> None:
    # 64x32, not 32x16: width-1 stage-3 maps hit a CPU bf16 BatchNorm kernel fault in torch
    result = train(tiny_run(synthetic_root, random_trunk, tmp_path / "bf16", "train.precision=bf16", "train.deterministic=false",
                            "data.height=64", "data.width=32", "train.stop_after_iters=2"))
    weights = load_checkpoint(result.last_checkpoint)["model"]
    assert all(t.dtype in (torch.float32, torch.int64) for t in weights.values())  # weights stay fp32
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_a_relative_data_root_is_saved_absolute(synthetic_root: Path, random_trunk: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # evaluating or resuming from another folder must find the same data, not render a new set there
    monkeypatch.chdir(synthetic_root.parent)
    result = train(tiny_run(Path(synthetic_root.name), random_trunk, tmp_path / "relative", "train.stop_after_iters=1",
                            "eval.every=0"))
    saved = load_checkpoint(result.last_checkpoint)["config"]["data"]["root"]
    assert Path(saved).is_absolute() and Path(saved) == synthetic_root.resolve()


@pytest.mark.slow
def test_a_last_batch_of_one_image_is_left_out_and_said(synthetic_root: Path, random_trunk: Path,
                                                        tmp_path: Path) -> None:
    from igoas.data import build_dataset

    images = len(build_dataset("synthetic", synthetic_root).train)
    batch = next(size for size in range(12, 2, -1) if images % size == 1)
    out = tmp_path / "odd"
    result = train(tiny_run(synthetic_root, random_trunk, out, f"data.batch_size={batch}", "data.drop_last=false",
                            "train.epochs=1", "train.fixbase_epochs=0"))
    assert result.finished and result.iteration == images // batch, "every full batch trained, the single one not"
    log = (out / "train.log").read_text()
    assert f"epoch 1, batch {images // batch + 1}: 1 image(s) for 1 replica(s) left out" in log
    assert "data.drop_last=false" in log
