"""Results describe themselves: the evaluation JSON and the run report name every setting
that changes a number, the data, the checkpoint (path and SHA-256) and the versions."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import igoas
from igoas.cli import main
from igoas.data import ReIDDataset, build_dataset


@pytest.mark.slow
def test_eval_json_records_what_its_numbers_depend_on(tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run" / "metrics.json"
    # settings given after the options, as fast-reid users write them
    assert main(["eval", "synthetic_demo_quick", "--weights", str(tiny_checkpoint), "--out", str(out),
                 f"data.root={synthetic_root}", "train.device=cpu", "eval.flip=true", "eval.query_expansion=2",
                 "eval.rerank=true", "eval.k1=7", "eval.k2=3", "eval.lambda_value=0.5", "eval.metric=cosine"]) == 0
    title, header = capsys.readouterr().out.splitlines()[:2]
    assert title.startswith("synthetic (protocol=same_camera")  # which protocol the numbers used
    assert header.split() == ["query", "set", "R1", "R5", "R10", "mAP", "mINP", "TPR@1e-4", "TPR@1e-3", "TPR@1e-2"]
    document = json.loads(out.read_text())
    assert 0.0 <= document["query_sets"]["query"]["TPR@1e-2"] <= 100.0
    assert document["checkpoint"] == {"path": str(tiny_checkpoint.resolve()),
                                      "sha256": hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()}
    assert document["eval"] == {"metric": "cosine", "flip": True, "query_expansion": 2, "query_expansion_alpha": 0.0,
                                "rerank": True, "k1": 7, "k2": 3, "lambda_value": 0.5, "precision": "fp32",
                                "max_rank": 50, "fprs": [1e-4, 1e-3, 1e-2]}
    assert document["datasets"] == [{"name": "synthetic", "root": str(synthetic_root),
                                     "options": {"render": True, "size": "tiny", "seed": 0},
                                     "protocol": build_dataset("synthetic", synthetic_root).protocol_info}]
    assert document["datasets"][0]["protocol"]["protocol"] == "same_camera"
    assert document["preprocess"]["height"] == 64 and document["preprocess"]["width"] == 32
    assert document["versions"]["igoas"] == igoas.__version__ and document["versions"]["torch"] == torch.__version__
    assert document["epoch"] == 1 and 0.0 <= document["mAP"] <= 100.0

    from igoas.viz import write_html_report

    page = write_html_report(out.parent).read_text()
    assert document["checkpoint"]["sha256"] in page and "query_expansion 2" in page
    assert "synthetic (protocol=same_camera" in page


def test_changing_a_setting_changes_the_record(tiny_checkpoint: Path) -> None:
    from igoas.config import load_config
    from igoas.artifacts.provenance import evaluation_record

    plain = evaluation_record(load_config("synthetic_demo_quick"), tiny_checkpoint)
    flipped = evaluation_record(load_config("synthetic_demo_quick", ["eval.flip=true"]), tiny_checkpoint)
    assert plain["eval"]["flip"] is False and flipped["eval"]["flip"] is True
    assert evaluation_record(load_config("synthetic_demo_quick"), {"model": {}})["checkpoint"] == \
        {"path": None, "sha256": None}


def test_each_target_records_the_protocol_its_reader_used() -> None:
    from igoas.config import load_config
    from igoas.artifacts.provenance import dataset_records

    cfg = load_config("occluded_reid_igoas")
    half = {"protocol": "cross_set", "train_source": "market1501", "occluded_reid_split": "half"}
    cropped = {"protocol": "cross_set", "train_source": "market1501", "partial_reid_query_folder": "partial_body_images"}
    datasets = {"occluded_reid": ReIDDataset("occluded_reid", "/d", [], [], [], protocol_info=half),
                "partial_reid": ReIDDataset("partial_reid", "/d", [], [], [], protocol_info=cropped)}
    records = {record["name"]: record for record in dataset_records(cfg, datasets)}
    assert records["occluded_reid"]["protocol"] == half and records["partial_reid"]["protocol"] == cropped
    assert "protocol" not in records["partial_ilids"]  # not evaluated: nothing is claimed for it
    assert all("protocol" not in record for record in dataset_records(cfg))
