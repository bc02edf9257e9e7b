"""A corpus of bad inputs, built in a temporary folder: every case must end in a clear,
one-line error that names the file or key (never a traceback), or a reported skip.

Classes: dataset-tree faults, checkpoint faults at every entry point (eval, extract,
export, ReIDModel, resume, import-official), config faults, resume faults, run-folder
faults and file-system faults (full disk, an output path that is a file).
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from factories import fake_run, make_files, make_market, random_official_state

from igoas.artifacts.checkpoint import load_checkpoint, save_checkpoint
from igoas.artifacts.run_dir import LOCK_FILE, claim_run_folder
from igoas.cli import main
from igoas.config import load_config
from igoas.data import build_dataset
from igoas.utils.errors import CheckpointError, ConfigError, DatasetError, IgoasError

MARKET = "market1501/Market-1501-v15.09.15"


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    """Exit code and output of one command; a failure must be the command's own error message."""
    code = main(list(argv))
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.out + captured.err
    if code:
        assert err.startswith(f"igoas {argv[0]}: error:"), err
    return code, captured.out + err


def defaults(folder: Path) -> Path:
    """A config file that keeps every default (the command line then sets what a case needs)."""
    path = folder / "defaults.yaml"
    path.write_text("train: {}\n")
    return path


# ----------------------------------------------------------------------------- dataset trees
def check(capsys: pytest.CaptureFixture, root: Path, dataset: str = "market1501") -> tuple[int, str]:
    code = main(["data", "check", str(root), "--dataset", dataset])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out + captured.err


@pytest.mark.parametrize("fault", ["dangling link", "link loop", "non-UTF-8 name"])
def test_entries_training_would_drop_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture, fault: str) -> None:
    query = make_market(tmp_path) / "query"
    if fault == "dangling link":
        bad = query / "0003_c3s1_001111_00.jpg"
        bad.symlink_to(query / "gone.jpg")
        expected = "symbolic link to a missing file"
    elif fault == "link loop":
        bad = query / "0003_c3s1_001111_00.jpg"
        bad.symlink_to(bad)
        expected = "symbolic link loop"
    else:
        bad = Path(os.fsdecode(os.fsencode(query) + b"/0003_c3s1_001111_00\xff.jpg"))
        bad.write_bytes((query / "0003_c1s1_001051_00.jpg").read_bytes())
        expected = "not valid UTF-8"
    code, out = check(capsys, tmp_path)
    assert code == 1 and "image entries that cannot be read" in out and expected in out
    with pytest.raises(DatasetError, match=expected):  # strict loading (training) refuses them too
        build_dataset("market1501", tmp_path)
    assert len(build_dataset("market1501", tmp_path, strict=False).query) == 2  # the reported skip


def test_unreadable_folder_and_image_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_market(tmp_path)
    denied = folder / "bounding_box_test"
    original_iterdir = Path.iterdir

    def iterdir(self: Path):
        if self == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return original_iterdir(self)

    with mock.patch.object(Path, "iterdir", iterdir):
        code, out = check(capsys, tmp_path)
        assert code == 1 and str(denied) in out and "Permission denied" in out
        with pytest.raises(DatasetError, match="cannot list the folder"):
            build_dataset("market1501", tmp_path)
    image = folder / "query" / "0003_c1s1_001051_00.jpg"
    original_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == image:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return original_read(self)

    with mock.patch.object(Path, "read_bytes", read_bytes):
        code, out = check(capsys, tmp_path)
    assert code == 1 and "unreadable images" in out and f"{image} (Permission denied)" in out


@pytest.mark.parametrize("content, expected", [(b"query/a.jpg 1\x00\x01\x02", "binary file"),
                                               (b"query/a.jpg 1\nquery/\xff.jpg 2\n", "line 2 is not UTF-8")])
def test_list_files_that_are_not_text(tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes,
                                      expected: str) -> None:
    make_files(tmp_path / "query", ["a.jpg"])
    (tmp_path / "query.txt").write_bytes(content)
    (tmp_path / "gallery.txt").write_text("query/a.jpg 1\n")
    with pytest.raises(DatasetError, match=expected) as info:
        build_dataset("custom", tmp_path)
    assert str(tmp_path / "query.txt") in str(info.value)
    code, out = check(capsys, tmp_path, dataset="custom")
    assert code == 1 and expected in out


def test_list_file_with_a_byte_order_mark_reads_its_first_image(tmp_path: Path) -> None:
    make_files(tmp_path / "query", ["a.jpg", "b.jpg"])
    (tmp_path / "query.txt").write_bytes("\ufeffquery/a.jpg 1\nquery/b.jpg 2\n".encode())
    (tmp_path / "gallery.txt").write_bytes(b"\xef\xbb\xbfquery/a.jpg 1\n")
    dataset = build_dataset("custom", tmp_path)
    assert sorted(Path(s.path) for s in dataset.query) == [tmp_path / "query/a.jpg", tmp_path / "query/b.jpg"]
    assert [Path(s.path) for s in dataset.gallery] == [tmp_path / "query/a.jpg"]


def test_empty_config_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "run.yaml"
    empty.write_text("\n# nothing yet\n")
    with pytest.raises(ConfigError, match="config file is empty") as info:
        load_config(empty)
    assert str(empty) in str(info.value)


@pytest.mark.parametrize("port, expected", [("99999", "port 99999 is out of range"), ("0", "port 0 is out of range"),
                                            ("http", "'http' is not a port number")])
def test_serve_port_out_of_range_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture, port: str,
                                                  expected: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", str(tmp_path / "model.pt"), "--gallery", str(tmp_path), "--port", port])
    err = capsys.readouterr().err
    assert info.value.code == 2 and expected in err and "1 to 65535" in err and "Traceback" not in err


def test_identity_beyond_64_bits_is_refused(tmp_path: Path) -> None:
    folder = make_market(tmp_path)
    make_files(folder / "query", ["99999999999999999999_c1s1_000001_00.jpg"])
    with pytest.raises(DatasetError, match="99999999999999999999_c1s1"):
        build_dataset("market1501", tmp_path)
    make_files(tmp_path / "custom" / "img", ["a.jpg", "b.jpg"])
    (tmp_path / "custom" / "query.txt").write_text("img/a.jpg 99999999999999999999999 c1\n")
    (tmp_path / "custom" / "gallery.txt").write_text("img/b.jpg 99999999999999999999999 c2\n")
    data = build_dataset("custom", tmp_path / "custom")  # a label too large for a number is numbered like a name
    assert data.query[0].pid == data.gallery[0].pid == 0


@pytest.mark.parametrize("empty, expected", [("bounding_box_train", "the training split holds no image"),
                                             ("query", "the query split holds no image")])
def test_empty_splits_are_found_before_training(tmp_path: Path, capsys: pytest.CaptureFixture, empty: str,
                                                expected: str) -> None:
    folder = make_market(tmp_path)
    for image in (folder / empty).iterdir():
        image.unlink()
    code, out = run_cli(capsys, "train", str(defaults(tmp_path)), "data.dataset=market1501", f"data.root={tmp_path}",
                        f"train.output_dir={tmp_path / 'run'}", "model.pretrained=false", "model.backbone=resnet18")
    assert code == 2 and expected in out and "cross-set" not in out
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any step


def test_a_cross_set_test_set_cannot_be_trained_on(tmp_path: Path) -> None:
    from igoas.data.base import CROSS_SET, ReIDDataset, Sample
    from igoas.data.check import ensure_trainable

    test_set = ReIDDataset("partial_reid", str(tmp_path), [], [Sample("q.jpg", 1, 0)], [Sample("g.jpg", 1, 1)],
                           protocol_info=dict(CROSS_SET))
    with pytest.raises(DatasetError, match="trained on market1501"):
        ensure_trainable(test_set, {"partial_reid": test_set})


def test_a_test_image_in_the_training_list_is_refused_before_training(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    make_files(tmp_path / "images", [f"{name}.jpg" for name in ("a1", "a2", "b1", "b2", "c1", "c2")])
    (tmp_path / "train.txt").write_text("images/a1.jpg alice c1\nimages/a2.jpg alice c2\nimages/c2.jpg carol c2\n")
    (tmp_path / "query.txt").write_text("images/b1.jpg bob c1\n")
    (tmp_path / "gallery.txt").write_text("images/b2.jpg bob c2\nimages/c2.jpg carol c2\n")
    code, out = run_cli(capsys, "train", "custom_igoas", f"data.root={tmp_path}", "model.pretrained=false",
                        f"train.output_dir={tmp_path / 'run'}")
    assert code == 2 and "1 image(s) of custom's gallery split are also training images" in out
    assert "images/c2.jpg" in out and "remove them from the training split" in out
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_synthetic_set_with_other_settings_is_never_replaced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from igoas.data import render_synthetic

    root = render_synthetic(tmp_path / "synthetic", num_ids=4, seed=0, size="tiny", image_size=(32, 16))
    before = sorted(p.name for p in root.rglob("*.jpg"))
    with pytest.raises(DatasetError, match=r"other settings \(seed 0 here, 3 asked\)"):
        build_dataset("synthetic", root, render=True, num_ids=4, seed=3, size="tiny", image_size=(32, 16))
    assert sorted(p.name for p in root.rglob("*.jpg")) == before


# ----------------------------------------------------------------------------- checkpoints
def _damaged_checkpoints(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """Bad files given as checkpoints, each with the phrase its error must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = load_checkpoint(good)
    cases: dict[str, tuple[Path, str]] = {}

    def write(name: str, data: bytes, expected: str) -> None:
        (folder / name).write_bytes(data)
        cases[name] = (folder / name, expected)

    write("notes.pth", b"epoch 3: mAP 41.2\nlooks good\n", "not a checkpoint: it is a text file")
    write("model.onnx", b"\x08\x07\x12\x07pytorch\x1a\x032.6" + bytes(200), "not a checkpoint: it is an ONNX model")
    write("random.pth", bytes(range(7, 256)) * 4, "not a checkpoint")
    write("random_pickle.pth", b"\x80\x02" + bytes(range(150, 250)), "cannot be read as a PyTorch checkpoint")
    write("truncated.pth", good.read_bytes()[:3000], "truncated or corrupt")
    write("empty.pth", b"", "empty (0 bytes)")

    def variant(name: str, expected: str, **changes) -> None:
        save_checkpoint(folder / name, {**payload, **changes})
        cases[name] = (folder / name, expected)

    nan_state = {key: value.clone() for key, value in payload["model"].items()}
    variance = next(key for key in nan_state if key.endswith("running_var"))
    nan_state[variance].fill_(float("inf"))
    variant("diverged.pth", "hold NaN or Inf", model=nan_state)
    negative_state = {key: value.clone() for key, value in payload["model"].items()}
    negative_state[variance][0] = -1.0
    variant("negative_variance.pth", "BatchNorm running variance(s) below 0", model=negative_state)
    preprocess = payload["preprocess"]
    variant("zero_std.pth", "std [0.229, 0.0, 0.225] finite and positive",
            preprocess={**preprocess, "std": [0.229, 0.0, 0.225]})
    variant("nan_mean.pth", "must be finite", preprocess={**preprocess, "mean": [float("nan"), 0.456, 0.406]})
    variant("zero_height.pth", "height and width must be at least 1 pixel", preprocess={**preprocess, "height": 0})
    variant("model_not_dict.pth", "not a mapping of tensor names", model=[1, 2, 3])
    variant("absurd_classes.pth", "num_classes=50000000000000",
            model_spec={**payload["model_spec"], "num_classes": 50_000_000_000_000})
    variant("spec_not_dict.pth", "'model_spec' entry is a str", model_spec="igoas")
    return cases


@pytest.fixture(scope="module")
def damaged(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return _damaged_checkpoints(tmp_path_factory.mktemp("damaged"), tiny_checkpoint)


CHECKPOINT_CASES = ["notes.pth", "model.onnx", "random.pth", "random_pickle.pth", "truncated.pth", "empty.pth",
                    "diverged.pth", "model_not_dict.pth", "absurd_classes.pth", "spec_not_dict.pth",
                    "negative_variance.pth"]
# Preprocessing an embedding needs (extract, export, serve, ReIDModel; evaluation reads its run config's).
PREPROCESS_CASES = ["zero_std.pth", "nan_mean.pth", "zero_height.pth"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKPOINT_CASES)
def test_bad_checkpoints_at_every_entry_point(name: str, damaged, synthetic_root: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    from igoas.deploy.inference import ReIDModel

    path, expected = damaged[name]
    for argv in (["eval", "--weights", str(path)],
                 ["extract", str(path), str(synthetic_root), "--dataset", "synthetic", "--out",
                  str(tmp_path / "f.npz"), "--workers", "0"],
                 ["export", str(path), "--out", str(tmp_path / "m.onnx")]):
        code, out = run_cli(capsys, *argv)
        assert code == 2 and str(path) in out and expected in out, (argv[0], out)
        assert not (tmp_path / "f.npz").exists() and not (tmp_path / "m.onnx").exists()
    with pytest.raises(CheckpointError) as info:
        ReIDModel.from_checkpoint(path)
    assert expected in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", PREPROCESS_CASES)
def test_unusable_preprocessing_is_refused_before_embedding(name: str, damaged, synthetic_root: Path,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from igoas.deploy.inference import ReIDModel

    path, expected = damaged[name]
    for argv in (["extract", str(path), str(synthetic_root), "--dataset", "synthetic", "--out",
                  str(tmp_path / "f.npz"), "--workers", "0"],
                 ["export", str(path), "--out", str(tmp_path / "m.onnx")]):
        code, out = run_cli(capsys, *argv)
        assert code == 2 and str(path) in out and expected in out, (argv[0], out)
        assert not (tmp_path / "f.npz").exists() and not (tmp_path / "m.onnx").exists()
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        ReIDModel.from_checkpoint(path)


def test_non_finite_embeddings_are_never_written_nor_indexed(tmp_path: Path) -> None:
    from igoas.retrieval import GalleryIndex
    from igoas.retrieval.features_file import Features, load_features, save_features

    embeddings = np.eye(3, 4, dtype=np.float32)
    good = Features(embeddings.copy(), ["a.jpg", "b.jpg", "c.jpg"], [0, 1, 2], [0, 0, 1])
    embeddings[1, 2] = np.nan
    with pytest.raises(IgoasError, match=r"1 of 3 embedding\(s\) hold NaN or Inf \(first: b.jpg\)"):
        Features(embeddings, ["a.jpg", "b.jpg", "c.jpg"], [0, 1, 2], [0, 0, 1])
    index = GalleryIndex.build(good)
    with pytest.raises(IgoasError, match=r"1 query embedding\(s\) hold NaN or Inf"):
        index.search(embeddings[1:2])
    path = save_features(tmp_path / "f.npz", good)   # a file damaged after writing is refused when read
    arrays = dict(np.load(path))
    arrays["embeddings"] = arrays["embeddings"].copy()
    arrays["embeddings"][0, 0] = np.inf
    np.savez(path, **arrays)
    with pytest.raises(IgoasError, match=f"{re.escape(str(path))}: features: 1 of 3 embedding"):
        load_features(path)
    del arrays["pids"]
    np.savez(path, **arrays)
    with pytest.raises(IgoasError, match="a features file without pids"):
        load_features(path)


@pytest.mark.parametrize("change, expected", [
    (lambda side: side.pop("paths"), r"missing or malformed field\(s\) paths \(list\)"),
    (lambda side: side["pids"].pop(), r"describes 3 vectors but holds 3 paths, 2 pids, 3 camids"),
])
def test_a_damaged_index_side_file_is_named(tmp_path: Path, change, expected: str) -> None:
    import json

    from igoas.retrieval import GalleryIndex
    from igoas.retrieval.features_file import Features
    from igoas.retrieval.index import metadata_path

    GalleryIndex.build(Features(np.eye(3, 4, dtype=np.float32), ["a", "b", "c"], [0, 1, 2], [0, 0, 1])).save(
        tmp_path / "g.faiss")
    side = json.loads(metadata_path(tmp_path / "g.faiss").read_text())
    change(side)
    metadata_path(tmp_path / "g.faiss").write_text(json.dumps(side))
    with pytest.raises(IgoasError, match=expected):
        GalleryIndex.load(tmp_path / "g.faiss")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["notes.pth", "random.pth", "truncated.pth", "diverged.pth"])
def test_bad_files_given_to_import_official(name: str, damaged, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, expected = damaged[name]
    if name == "diverged.pth":  # an authors'-style bare state dict with an infinite BatchNorm variance

        state = random_official_state()
        state[next(k for k in state if k.endswith("running_var"))].fill_(float("nan"))
        torch.save({"state_dict": state, "epoch": 3}, path := tmp_path / "official.pth.tar")
    code, out = run_cli(capsys, "import-official", str(path), "--out", str(tmp_path / "out.pth"))
    assert code == 2 and str(path) in out and expected in out
    assert not (tmp_path / "out.pth").exists()


def test_non_finite_pretrained_weights_are_refused(tmp_path: Path) -> None:
    from igoas.model import build_model
    from igoas.model.backbone import build_trunk

    state = {key: value.clone() for key, value in build_trunk("resnet18").state_dict().items()}
    state["bn1.running_var"].fill_(float("nan"))
    torch.save(state, tmp_path / "trunk.pth")
    with pytest.raises(CheckpointError, match=r"trunk\.pth: 1 tensor\(s\) hold NaN or Inf \(bn1\.running_var\)"):
        build_model(num_classes=3, pretrained=str(tmp_path / "trunk.pth"), backbone="resnet18")


@pytest.mark.parametrize("name", ["notes.pth", "model.onnx", "random.pth", "truncated.pth"])
def test_unreadable_pretrained_weights_are_named_in_one_line(name: str, damaged) -> None:
    from igoas.model import build_model

    path, _ = damaged[name]
    with pytest.raises(CheckpointError) as info:
        build_model(num_classes=3, pretrained=str(path), backbone="resnet18")
    message = str(info.value)
    assert message.startswith(f"cannot read pretrained weights {path} (") and "\n" not in message, message
    assert "igoas checkpoint" in message and "torch.load" not in message
    assert ("ONNX model" in message) == (name == "model.onnx")


def test_unsafe_pickle_is_still_called_unsafe(tmp_path: Path) -> None:
    torch.save({"format": "igoas", "hook": shutil.rmtree}, tmp_path / "unsafe.pth")
    with pytest.raises(CheckpointError, match="arbitrary pickled Python objects.*shutil.rmtree"):
        load_checkpoint(tmp_path / "unsafe.pth")


def test_export_check_never_passes_non_finite_embeddings(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from igoas.deploy.export import check_export, reference_graph
    from igoas.deploy.inference import ReIDModel

    model = ReIDModel.from_checkpoint(tiny_checkpoint)
    graph = reference_graph(model)
    with mock.patch("igoas.deploy.export._format") as fmt:
        fmt.return_value.load.return_value = lambda images: torch.full((len(images), 1024), float("nan")).numpy()
        with pytest.raises(IgoasError, match="NaN or Inf"):
            check_export(tmp_path / "m.onnx", graph, model.preprocess_config, "onnx", batch_sizes=(1,))


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("text, expected", [
    ("data:\n  root: [unclosed\n", "cannot be read as YAML"),
    ("data:\n  augment: {flipp: 0.5}\n", "data.augment.flipp"),
    ("data:\n  std: [0.2, 0.0, 0.2]\n", "data.std"),
    ("optim:\n  lrr: 0.1\n", "optim.lrr"),
    ("- just\n- a list\n", "must be a mapping"),
    ("data:\n  batch_size: many\n", "data.batch_size"),
])
def test_config_faults(tmp_path: Path, capsys: pytest.CaptureFixture, text: str, expected: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    code, out = run_cli(capsys, "train", str(config), f"train.output_dir={tmp_path / 'run'}")
    assert code == 2 and expected in out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, expected", [("optim.lr=[", "not valid YAML"), ("data.augment.pad=[1", "YAML"),
                                                ("data.mean=[0.5]", "data.mean")])
def test_override_faults(tmp_path: Path, capsys: pytest.CaptureFixture, override: str, expected: str) -> None:
    code, out = run_cli(capsys, "train", "synthetic_demo_quick", override, f"train.output_dir={tmp_path / 'run'}")
    assert code == 2 and expected in out


@pytest.mark.parametrize("override, expected", [
    ("optim.gamma=-1", "optim.gamma must be in (0, 1], got -1.0"),
    ("optim.min_lr_factor=-0.5", "optim.min_lr_factor must be in [0, 1]"),
    ("loss.mask_loss_weight=-1", "loss.mask_loss_weight must be at least 0"),
    ("loss.triplet_margin=-0.3", "loss.triplet_margin must be at least 0"),
    ("loss.label_smoothing=1.5", "loss.label_smoothing must be in [0, 1)"),
    ("data.augment.pad=-10", "data.augment.pad must be at least 0"),
    ("data.augment.pad=2.5", "data.augment.pad=2.5 is a number of pixels"),
    ("optim.betas=[0.9,1.5]", "optim.betas[1] must be in [0, 1)"),
    ("optim.weight_decay=nan", "optim.weight_decay is nan; give a finite number"),
    ("optim.momentum=-0.9", "optim.momentum must be at least 0"),
    ("data.augment.random_erasing=2", "data.augment.random_erasing must be in [0, 1], got 2"),
    ("data.augment.flip=abc", "data.augment.flip='abc' must be a number in [0, 1]"),
    ("train.seed=-1", "train.seed must be in [0, 4294967295], got -1"),
    (f"train.seed={2**70}", "train.seed must be in [0, 4294967295]"),
    ("eval.lambda_value=5", "eval.lambda_value must be in [0, 1], got 5.0"),
    ("data.mean=[.nan,0.4,0.4]", "data.mean[0] is nan"),
    ("optim.warmup_epochs=.inf", "optim.warmup_epochs is inf"),
    ("optim.grad_clip=nan", "optim.grad_clip is nan"),
])
def test_out_of_range_numbers_are_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          override: str, expected: str) -> None:
    code, out = run_cli(capsys, "train", "synthetic_demo_quick", override, f"train.output_dir={tmp_path / 'run'}")
    assert code == 2 and expected in out and "Traceback" not in out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arguments, expected", [
    (["data", "synth", "OUT", "--seed", "-1"], "--seed: seed -1 is out of range; give an integer from 0 to 4294967295"),
    (["extract", "C", "D", "--out", "F", "--batch-size", "0"], "--batch-size: count 0 is out of range"),
    (["extract", "C", "D", "--out", "F", "--num-workers", "-1"], "count -1 is out of range; give an integer of at least 0"),
    (["robustness", "C", "--dataset", "x", "--root", "r", "--seed", "many"], "'many' is not a seed"),
    (["search", "query", "I", "--topk", "0"], "--topk: count 0 is out of range"),
])
def test_out_of_range_command_line_numbers_are_usage_errors(capsys: pytest.CaptureFixture, arguments: list[str],
                                                            expected: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(arguments)
    error = capsys.readouterr().err
    assert info.value.code == 2 and expected in error and "Traceback" not in error


def test_a_word_that_is_no_override_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "synthetic_demo_quick", "nokey", f"train.output_dir={tmp_path / 'run'}"])
    assert info.value.code == 2 and "'nokey' is not a key=value override" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- file system
def test_full_disk_keeps_the_previous_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    target = tmp_path / "last.pth"
    shutil.copy(tiny_checkpoint, target)
    before = target.read_bytes()
    with mock.patch("igoas.utils.fileio.os.fsync", side_effect=OSError(errno.ENOSPC, "No space left on device")):
        with pytest.raises(IgoasError, match=r"^disk full while writing .*last\.pth; the previous last\.pth"):
            save_checkpoint(target, load_checkpoint(tiny_checkpoint))
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_export_on_a_full_disk_names_the_file_asked_for(tiny_checkpoint: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "model.pt"
    with mock.patch("igoas.utils.fileio.os.fsync", side_effect=OSError(errno.ENOSPC, "No space left on device")):
        code, out = run_cli(capsys, "export", str(tiny_checkpoint), "--format", "torchscript", "--out", str(target))
    assert code == 2 and f"disk full while writing {target}; the previous model.pt (if any) is kept" in out
    assert list(tmp_path.iterdir()) == [], "neither the export nor a staging file is left"


def test_output_path_that_is_a_file(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    code, out = run_cli(capsys, "eval", "--weights", str(tiny_checkpoint), "--out", str(tmp_path / "taken/m.json"))
    assert code == 2 and f"{tmp_path / 'taken'} is a file" in out
    code, out = run_cli(capsys, "train", "synthetic_demo_quick", f"train.output_dir={tmp_path / 'taken'}")
    assert code == 2 and "the run folder is a file" in out


# ----------------------------------------------------------------------------- run folders
def test_live_lock_fresh_folder_overwrite_and_orphans(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with claim_run_folder(run):
        with pytest.raises(IgoasError, match=rf"in use by another igoas process \(pid {os.getpid()},"):
            with claim_run_folder(run, resume=True):
                pass
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pth").write_bytes(b"old")
    (run / "train.log").write_text("old run\n")
    (run / "notes.txt").write_text("mine")
    orphan = run / "checkpoints" / ".last.pth.k2j3h4.tmp"
    orphan.write_bytes(bytes(1000))
    with pytest.raises(ConfigError, match=r"is not empty .*--resume .*--overwrite"):
        with claim_run_folder(run):
            pass
    with claim_run_folder(run, resume=True) as notes:  # a resume keeps the run, drops the orphan
        assert not orphan.exists() and "interrupted save" in notes[0]
    assert (run / "train.log").is_file()
    with claim_run_folder(run, overwrite=True) as notes:
        assert "removed the earlier run's checkpoints, train.log" in notes[0]
    assert sorted(p.name for p in run.iterdir()) == sorted([LOCK_FILE, "notes.txt"])  # the user's own file stays


# ----------------------------------------------------------------------------- training and resume
def tiny_run(root: Path, out: Path, *extra: str) -> list[str]:
    return ["data.dataset=synthetic", f"data.root={root}", "data.height=32", "data.width=16", "data.batch_size=8",
            "data.num_workers=0", "model.backbone=resnet18", "model.pretrained=false", "train.epochs=2",
            "train.device=cpu", "train.precision=fp32", "train.deterministic=true", "train.log_every=1",
            "train.progress_bar=false", "train.tensorboard=false", f"train.output_dir={out}", "eval.every=0",
            "eval.num_workers=0", *extra]


@pytest.fixture(scope="module")
def stopped_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped (resumably) after 2 of its 8 iterations, with checkpoints at 1 and 2."""
    from igoas.training.trainer import train

    out = tmp_path_factory.mktemp("resume") / "run"
    train(load_config(None, tiny_run(synthetic_root, out, "train.stop_after_iters=2",
                                     "train.checkpoint_every_iters=1")))
    return out


def copy_run(run: Path, tmp_path: Path, **changes) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    if changes:
        last = copy / "checkpoints" / "last.pth"
        save_checkpoint(last, {**load_checkpoint(last), **changes})
    return copy


@pytest.mark.parametrize("override, expected", [("model.backbone=resnet50", "model.backbone"),
                                                ("data.batch_size=4", "data.batch_size"),
                                                ("train.seed=5", "train.seed")])
@pytest.mark.slow
def test_resume_refuses_what_the_checkpoint_fixes(stopped_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  override: str, expected: str) -> None:
    run = copy_run(stopped_run, tmp_path)
    code, out = run_cli(capsys, "train", "--resume", str(run), override)
    assert code == 2 and f"cannot resume {run} with {expected}" in out


@pytest.mark.slow
def test_resume_applies_a_learning_rate_override(stopped_run: Path, tmp_path: Path) -> None:
    from igoas.training.trainer import train

    run = copy_run(stopped_run, tmp_path)
    before = load_checkpoint(run / "checkpoints/last.pth")["scheduler"]["base_lrs"]
    result = train(resume=run, overrides=["optim.lr=0.001", "train.stop_after_iters=3"])
    after = load_checkpoint(result.last_checkpoint)
    assert after["iteration"] == 3 and after["config"]["optim"]["lr"] == 0.001
    assert after["scheduler"]["base_lrs"] == [0.001] * len(before) != before
    assert after["optimizer"]["param_groups"][0]["initial_lr"] == 0.001
    assert "optim.lr 0.0003 -> 0.001 takes effect from here" in (run / "train.log").read_text()


@pytest.mark.parametrize("changes, expected", [
    ({"batch": 99}, "batch 99 is outside"),
    ({"epoch": 7}, "epoch 7 is outside"),
    ({"iteration": 40}, "iteration 40 is not epoch"),
    ({"iteration": "two"}, "not a number"),
    ({"rng": {"python": "garbage"}}, "random-number state is damaged"),
    ({"optimizer": {"state": {}, "param_groups": []}}, "optimiser state is damaged"),
    ({"sampler": {"kind": "identity", "epoch": 0, "consumed": 10**6, "seed": 0}}, "sampler state"),
    ({"model": {"global_classifier.weight": torch.zeros(2, 2)}}, "weights do not match"),
])
@pytest.mark.slow
def test_resume_refuses_damaged_training_state(stopped_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                               changes: dict, expected: str) -> None:
    run = copy_run(stopped_run, tmp_path, **changes)
    if changes.get("sampler"):  # a position beyond the data, in the run's own sampler setup
        saved = load_checkpoint(run / "checkpoints/last.pth")
        original = load_checkpoint(stopped_run / "checkpoints/last.pth")["sampler"]
        save_checkpoint(run / "checkpoints/last.pth", {**saved, "sampler": {**original, "consumed": 10**6}})
    code, out = run_cli(capsys, "train", "--resume", str(run))
    assert code == 2 and str(run / "checkpoints/last.pth") in out and expected in out


def test_a_second_fresh_run_into_a_used_folder_is_refused(stopped_run: Path, synthetic_root: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    run = copy_run(stopped_run, tmp_path)
    log = (run / "train.log").read_text()
    code, out = run_cli(capsys, "train", str(defaults(tmp_path)), *tiny_run(synthetic_root, run))
    assert code == 2 and "is not empty" in out and f"igoas train --resume {run}" in out
    assert (run / "train.log").read_text() == log


@pytest.mark.slow
def test_infinite_batchnorm_statistics_are_never_saved(synthetic_root: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import igoas.training.trainer as trainer

    step = trainer.train_step

    def overflowing(state, *args):
        record = step(state, *args)
        if state.iteration == 3:  # the step that makes iteration 3: statistics overflow, gradients stay finite
            variance = next(m for m in state.model.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var
            variance.fill_(float("inf"))
        return record

    monkeypatch.setattr(trainer, "train_step", overflowing)
    out = tmp_path / "diverged"
    with pytest.raises(trainer.TrainingDiverged, match=r"non-finite values in 1 weight/buffer .*running_var"):
        trainer.train(load_config(None, tiny_run(synthetic_root, out, "train.checkpoint_every_iters=1")))
    kept = load_checkpoint(out / "checkpoints/last.pth")  # loads: every tensor finite
    assert kept["iteration"] == 2


@pytest.mark.slow
def test_train_log_matches_the_checkpoint_after_a_kill(synthetic_root: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import igoas.training.trainer as trainer

    out = tmp_path / "killed"
    calls = {"n": 0}
    compute = trainer.compute_losses

    def killed(*args, **options):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return compute(*args, **options)

    monkeypatch.setattr(trainer, "compute_losses", killed)
    with pytest.raises(KeyboardInterrupt):  # checkpoint at 2, iteration 3 logged and lost
        trainer.train(load_config(None, tiny_run(synthetic_root, out, "train.checkpoint_every_iters=2")))
    monkeypatch.undo()
    (out / "checkpoints" / ".last.pth.x1y2z3.tmp").write_bytes(bytes(4096))  # as left by a kill during a save
    trainer.train(resume=out, overrides=["train.stop_after_iters=5"])
    steps = [line.split(" iteration ")[1].split("/")[0] for line in (out / "train.log").read_text().splitlines()
             if " iteration " in line and "] iteration" in line]
    assert steps == ["1", "2", "3", "4", "5"]
    assert not list((out / "checkpoints").glob(".*.tmp"))


# ----------------------------------------------------------------------------- optional extras
def test_a_missing_extra_is_named_with_its_install_command(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    fake_run(run)
    capsys.readouterr()  # the run's own log lines
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out = run_cli(capsys, "viz", "curves", str(run), "--out", str(tmp_path / "c.png"))
    assert code == 2 and "'matplotlib'" in out and "pip install 'igoas[viz]'" in out and out.count("\n") == 0
    assert not (tmp_path / "c.png").exists()


def test_robustness_checks_the_figures_extra_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    # the dataset is not even read: a missing one would otherwise be the error
    code, out = run_cli(capsys, "robustness", "missing.pth", "--dataset", "synthetic", "--root",
                        str(tmp_path / "no_dataset"), "--out", str(tmp_path / "out"))
    assert code == 2 and "pip install 'igoas[viz]'" in out
    assert not (tmp_path / "out" / "robustness.json").exists()
