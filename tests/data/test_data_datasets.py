"""Every dataset family read from a tiny tree in its exact on-disk layout."""
from __future__ import annotations

from pathlib import Path

import pytest
from factories import make_files, make_market, write_msmt17

from igoas.data import DATASETS, ReIDDataset, Sample, build_dataset, combine_train_sets, published_statistics
from igoas.utils.errors import ConfigError, DatasetError

def pids(samples: list[Sample]) -> list[int]:
    return sorted({s.pid for s in samples})


def test_market1501_parses_relabels_and_handles_junk_and_distractors(tmp_path: Path) -> None:
    make_market(tmp_path)
    (tmp_path / "market1501/Market-1501-v15.09.15/query/Thumbs.db").write_bytes(b"not an image")
    data = build_dataset("market1501", tmp_path)
    assert pids(data.train) == [0, 1, 2]  # 2, 7, 10 relabelled in order
    assert {(Path(s.path).name, s.pid, s.camid) for s in data.train} >= {("0002_c2s1_000551_01.jpg", 0, 1),
                                                                           ("0010_c6s4_002427_02.jpg", 2, 5)}
    assert pids(data.query) == [3, 5]  # test identities keep their numbers
    assert 0 in pids(data.gallery) and -1 not in pids(data.gallery)  # distractor kept, junk dropped
    assert len(data.gallery) == 4
    assert data.distractor_pids == frozenset({0})
    assert (data.num_train_pids, data.num_train_cams) == (3, 4)
    assert data.protocol_info == {"protocol": "same_camera"}


@pytest.mark.parametrize("top", ["market1501/Market-1501-v15.09.15", "Market-1501-v15.09.15", "Market", ""])
def test_market1501_accepts_the_usual_top_folders(tmp_path: Path, top: str) -> None:
    make_market(tmp_path, top)
    assert len(build_dataset("market1501", tmp_path).train) == 4
    assert len(build_dataset("market1501", tmp_path / top).train) == 4  # or pointing at the folder itself


def test_market1501_500k_distractors_join_the_gallery(tmp_path: Path) -> None:
    folder = make_market(tmp_path)
    with pytest.raises(DatasetError, match="images"):
        build_dataset("market1501", tmp_path, distractors_500k=True)
    make_files(folder / "images", ["0000_c1s1_900000_00.jpg", "0000_c2s1_900001_00.jpg"])
    assert len(build_dataset("market1501", tmp_path, distractors_500k=True).gallery) == 6


def test_unparsable_names_fail_strict_and_are_collected_otherwise(tmp_path: Path) -> None:
    folder = make_market(tmp_path)
    make_files(folder / "query", ["holiday.jpg"])
    with pytest.raises(DatasetError, match=r"PPPP_cCsS[\s\S]*holiday\.jpg"):
        build_dataset("market1501", tmp_path)
    data = build_dataset("market1501", tmp_path, strict=False)
    assert [Path(u.path).name for u in data.unparsed_files] == ["holiday.jpg"]
    assert len(data.query) == 2


def test_statistics_table_counts_and_compares_with_published(tmp_path: Path) -> None:
    make_market(tmp_path)
    table = build_dataset("market1501", tmp_path).statistics(published_statistics("market1501"))
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]] for line in table.splitlines()[1:]
            if "|" in line}
    assert rows["train"][:3] == ["3", "4", "4"]
    assert rows["gallery"][:3] == ["3", "4", "4"]  # 3, 5 and the distractor 0
    assert rows["query"][3].startswith("750/3368") and "differs" in rows["query"][3]


def test_duke_and_occluded_duke(tmp_path: Path) -> None:
    for top, name in (("dukemtmc-reid/DukeMTMC-reID", "dukemtmcreid"), ("occluded-duke/Occluded_Duke", "occluded_duke")):
        folder = tmp_path / name / top
        make_files(folder / "bounding_box_train", ["0001_c2_f0046182.jpg", "0001_c8_f0001000.jpg", "0005_c1_f0002000.jpg"])
        make_files(folder / "query", ["0019_c5_f0003000.jpg"])
        make_files(folder / "bounding_box_test", ["0019_c1_f0004000.jpg", "0020_c7_f0005000.jpg"])
        data = build_dataset(name, tmp_path / name)
        assert {(s.pid, s.camid) for s in data.train} == {(0, 1), (0, 7), (1, 0)}
        assert {(s.pid, s.camid) for s in data.gallery} == {(19, 0), (20, 6)}
        assert data.name == name


def test_cuhk03_np_variants(tmp_path: Path) -> None:
    for variant in ("detected", "labeled"):
        folder = tmp_path / "cuhk03-np" / variant
        make_files(folder / "bounding_box_train", ["0001_c1_1.png", "0001_c2_2.png"], fmt="PNG")
        make_files(folder / "query", ["0701_c1_1.png"], fmt="PNG")
        make_files(folder / "bounding_box_test", ["0701_c2_1.png"] * (2 if variant == "labeled" else 1), fmt="PNG")
    data = build_dataset("cuhk03_np", tmp_path, variant="labeled")
    assert data.protocol_info["variant"] == "labeled" and {s.camid for s in data.train} == {0, 1}
    assert Path(data.root).name == "labeled"
    with pytest.raises(DatasetError, match="variant"):
        build_dataset("cuhk03_np", tmp_path, variant="both")


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_lists_and_cameras(tmp_path: Path, version: str) -> None:
    write_msmt17(tmp_path, version)
    data = build_dataset("msmt17", tmp_path)
    assert data.protocol_info["version"] == version.lower()
    assert len(data.train) == 4 and pids(data.train) == [0, 1]  # train + val
    assert sorted(s.camid for s in data.train) == [0, 2, 4, 14]
    assert [s.camid for s in data.query] == [1]
    assert all(Path(s.path).is_file() for s in data.train + data.query + data.gallery)
    assert len(build_dataset("msmt17", tmp_path, combine_train_val=False).train) == 3


def test_msmt17_malformed_list_line(tmp_path: Path) -> None:
    folder = write_msmt17(tmp_path)
    with (folder / "list_query.txt").open("a") as f:
        f.write("broken_line_without_pid\n")
    with pytest.raises(DatasetError, match="list_query.txt:2"):
        build_dataset("msmt17", tmp_path)


def make_occluded_reid(root: Path, flattened: bool = False) -> Path:
    folder = root / "occluded-reid" / "Occluded_REID"
    for kind in ("occluded_body_images", "whole_body_images"):
        names = [f"{pid:03d}_{k:02d}.tif" for pid in (1, 87, 88, 150, 187, 188, 200) for k in (1, 2)]
        make_files(folder / kind, names if flattened else [f"{n[:3]}/{n}" for n in names], fmt="TIFF")
    return folder


@pytest.mark.parametrize("flattened", [False, True])
def test_occluded_reid_standard_protocol(tmp_path: Path, flattened: bool) -> None:
    make_occluded_reid(tmp_path, flattened)
    data = build_dataset("occluded_reid", tmp_path)
    assert data.train == [] and len(data.query) == len(data.gallery) == 14
    assert {s.camid for s in data.query} == {0} and {s.camid for s in data.gallery} == {1}
    assert data.protocol_info == {"protocol": "cross_set", "occluded_reid_split": "standard",
                                  "train_source": "market1501"}


def test_occluded_reid_half_split_trains_on_88_to_187(tmp_path: Path) -> None:
    make_occluded_reid(tmp_path)
    data = build_dataset("occluded_reid", tmp_path, split="half")
    assert pids(data.train) == [0, 1, 2] and len(data.train) == 12  # 88, 150, 187: both kinds
    assert pids(data.query) == pids(data.gallery) == [1, 87, 188, 200]
    assert data.protocol_info["occluded_reid_split"] == "half"
    with pytest.raises(DatasetError, match="split"):
        build_dataset("occluded_reid", tmp_path, split="third")


def test_partial_reid_reads_the_authors_query_folder_by_default(tmp_path: Path) -> None:
    folder = tmp_path / "partial-reid" / "PartialREID"
    make_files(folder / "occluded_body_images", ["001_01.jpg", "002_01.jpg"])
    make_files(folder / "partial_body_images", ["001_01.jpg"])
    make_files(folder / "whole_body_images", ["001_01.jpg", "001_02.jpg", "002_01.jpg"])
    data = build_dataset("partial_reid", tmp_path)
    assert (len(data.query), len(data.gallery), data.train) == (2, 3, [])
    assert {s.camid for s in data.query} == {0} and {s.camid for s in data.gallery} == {1}
    assert data.protocol_info["protocol"] == "cross_set"
    assert data.protocol_info["partial_reid_query_folder"] == "occluded_body_images"
    assert all("occluded_body_images" in s.path for s in data.query)
    cropped = build_dataset("partial_reid", tmp_path, query_folder="partial_body_images")
    assert len(cropped.query) == 1 and "partial_body_images" in cropped.query[0].path


def test_partial_reid_names_the_missing_query_folder(tmp_path: Path) -> None:
    make_files(tmp_path / "PartialREID" / "whole_body_images", ["001_01.jpg"])
    with pytest.raises(DatasetError, match="no occluded_body_images/"):
        build_dataset("partial_reid", tmp_path)
    with pytest.raises(DatasetError, match="query_folder 'cropped'"):
        build_dataset("partial_reid", tmp_path, query_folder="cropped")


@pytest.mark.parametrize("only", ["partial_body_images", "occluded_body_images"])
def test_partial_reid_uses_the_one_query_folder_a_copy_has(tmp_path: Path, only: str) -> None:
    make_files(tmp_path / "PartialREID" / "whole_body_images", ["001_01.jpg"])
    make_files(tmp_path / "PartialREID" / only, ["001_01.jpg", "001_02.jpg"])
    data = build_dataset("partial_reid", tmp_path)
    assert len(data.query) == 2 and all(only in s.path for s in data.query)
    assert data.protocol_info["partial_reid_query_folder"] == only
    other = next(d for d in ("partial_body_images", "occluded_body_images") if d != only)
    with pytest.raises(DatasetError, match=rf"no {other}/[\s\S]*-o query_folder={only}") as err:
        build_dataset("partial_reid", tmp_path, query_folder=other)  # an explicit choice is never swapped
    assert "data.target_options" in str(err.value) and "data.options" not in str(err.value)


def test_partial_ilids(tmp_path: Path) -> None:
    folder = tmp_path / "partial-ilids" / "Partial_iLIDS"
    make_files(folder / "Probe", ["001.jpg", "002.jpg"])
    make_files(folder / "Gallery", ["001.jpg", "002.jpg"])
    data = build_dataset("partial_ilids", tmp_path)
    assert pids(data.query) == pids(data.gallery) == [1, 2]
    assert {s.camid for s in data.query} == {0} and {s.camid for s in data.gallery} == {1}


def test_p_dukemtmc(tmp_path: Path) -> None:
    folder = tmp_path / "P-DukeMTMC-reid"
    make_files(folder / "train/occluded_body_images", ["0005/0005_2_046985.jpg", "0009/0009_1_000100.jpg"])
    make_files(folder / "train/whole_body_images", ["0005/0005_3_046990.jpg"])
    make_files(folder / "test/occluded_body_images", ["0100/0100_1_000200.jpg"])
    make_files(folder / "test/whole_body_images", ["0100/0100_4_000300.jpg", "0101/0101_2_000400.jpg"])
    data = build_dataset("p_dukemtmc", tmp_path)
    assert {(s.pid, s.camid) for s in data.train} == {(0, 0), (1, 0), (0, 1)}
    assert [(s.pid, s.camid) for s in data.query] == [(100, 0)]
    assert {s.camid for s in data.gallery} == {1}


def test_custom_market_layout(tmp_path: Path) -> None:
    make_market(tmp_path, "")
    data = build_dataset("custom", tmp_path)
    assert data.name == "custom" and len(data.train) == 4 and pids(data.query) == [3, 5]


def test_custom_lists_with_names_and_relative_paths(tmp_path: Path) -> None:
    make_files(tmp_path / "images", ["a1.jpg", "a2.jpg", "b1.jpg", "c1.jpg", "c2.jpg", "d1 copy.jpg"])
    (tmp_path / "train.txt").write_text("images/a1.jpg alice cam2\nimages/a2.jpg alice cam1\nimages/b1.jpg bob cam2\n")
    (tmp_path / "query.txt").write_text("images/c1.jpg carol cam1\n\n")
    (tmp_path / "gallery.csv").write_text("path,pid,camid\nimages/c2.jpg,carol,cam2\nimages/d1 copy.jpg,dave,cam1\n")
    data = build_dataset("custom", tmp_path)
    assert [(s.pid, s.camid) for s in data.train] == [(0, 1), (0, 0), (1, 1)]  # alice, bob; cam1 -> 0
    assert data.query[0].pid == data.gallery[0].pid != data.gallery[1].pid
    assert Path(data.gallery[1].path).is_file()
    assert data.protocol_info == {"protocol": "same_camera"}


def test_custom_lists_numeric_ids_drop_junk_and_without_cameras_go_cross_set(tmp_path: Path) -> None:
    (tmp_path / "query.txt").write_text("q1.jpg 17\nq2.jpg -1\n")
    (tmp_path / "gallery.txt").write_text("g1.jpg 17\ng2.jpg 4\n")
    data = build_dataset("custom", tmp_path)
    assert [s.pid for s in data.query] == [17] and [s.pid for s in data.gallery] == [17, 4]
    assert data.train == [] and data.protocol_info == {"protocol": "cross_set", "train_source": "another dataset"}
    assert {s.camid for s in data.query} == {0} and {s.camid for s in data.gallery} == {1}


def test_custom_lists_drop_junk_identities_from_every_split(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("t1.jpg 5 c1\nt2.jpg -1 c2\nt3.jpg 9 c1\n")
    (tmp_path / "query.txt").write_text("q1.jpg carol c1\nq2.jpg -1 c2\n")
    (tmp_path / "gallery.txt").write_text("g1.jpg carol c2\ng2.jpg -1 c1\ng3.jpg dave c1\n")
    data = build_dataset("custom", tmp_path)
    assert [Path(s.path).name for s in data.train] == ["t1.jpg", "t3.jpg"] and data.num_train_pids == 2
    assert [Path(s.path).name for s in data.query + data.gallery] == ["q1.jpg", "g1.jpg", "g3.jpg"]
    assert pids(data.query + data.gallery) == [0, 1]  # carol and dave; -1 is never a name


def test_custom_space_separated_paths_with_spaces_and_no_camera(tmp_path: Path) -> None:
    make_files(tmp_path / "my photos", ["a 1.jpg", "b.jpg"])
    (tmp_path / "query.txt").write_text("my photos/a 1.jpg alice\n")
    (tmp_path / "gallery.txt").write_text("my photos/b.jpg alice\nother.jpg bob\n")
    data = build_dataset("custom", tmp_path)
    assert [s.path for s in data.query] == [str(tmp_path / "my photos" / "a 1.jpg")]
    assert Path(data.gallery[0].path).is_file() and data.query[0].pid == data.gallery[0].pid
    assert data.protocol_info["protocol"] == "cross_set"
    (tmp_path / "query.txt").write_text("my photos/a 1.jpg alice c1\n")  # with a camera column too
    (tmp_path / "gallery.txt").write_text("my photos/b.jpg alice c2\n")
    data = build_dataset("custom", tmp_path)
    assert Path(data.query[0].path).name == "a 1.jpg" and data.protocol_info["protocol"] == "same_camera"


def test_custom_misnamed_folder_gets_the_closest_found_hint(tmp_path: Path) -> None:
    make_market(tmp_path, "")
    (tmp_path / "bounding_box_test").rename(tmp_path / "bounding_box_tests")
    with pytest.raises(DatasetError) as err:
        build_dataset("custom", tmp_path)
    message = str(err.value)
    assert "closest found" in message and "bounding_box_tests" in message and "query.txt" in message


def test_custom_mixed_camera_columns_name_the_odd_line(tmp_path: Path) -> None:
    (tmp_path / "query.txt").write_text("scans/front door/0001 alice\nq2.jpg bob\n")  # no extension: ambiguous
    (tmp_path / "gallery.txt").write_text("g1.jpg alice\ng2.jpg bob\n")
    with pytest.raises(DatasetError) as err:
        build_dataset("custom", tmp_path)
    message = str(err.value)
    assert "query.txt:1: `scans/front door/0001 alice` reads as path, identity and camera" in message
    assert ".csv" in message and "q2.jpg" not in message and "g1.jpg" not in message


def test_custom_reports_missing_lists_and_bad_lines(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="query.txt") as err:
        build_dataset("custom", tmp_path)
    assert "bounding_box_train" in str(err.value)  # both forms are named
    (tmp_path / "query.txt").write_text("q1.jpg 1 0\nq2.jpg\n")
    (tmp_path / "gallery.txt").write_text("g1.jpg 1 1\n")
    with pytest.raises(DatasetError, match=r"query.txt:2"):
        build_dataset("custom", tmp_path)


def _toy(name: str, train: list[tuple[int, int]], test: list[tuple[int, int]] = (),
         distractors: frozenset[int] = frozenset()) -> ReIDDataset:
    samples = [Sample(f"/{name}/train/{i}.jpg", p, c) for i, (p, c) in enumerate(train)]
    gallery = [Sample(f"/{name}/test/{i}.jpg", p, c) for i, (p, c) in enumerate(test)]
    return ReIDDataset(name, "/", samples, [], gallery, distractor_pids=distractors)


def test_combine_train_sets_keeps_sources_apart_and_relabels() -> None:
    a = _toy("a", [(0, 0), (1, 1), (1, 0)])
    b = _toy("b", [(0, 0), (5, 2)])
    combined = combine_train_sets([a, b])
    assert sorted({s.pid for s in combined}) == [0, 1, 2, 3]  # pid 0 of a and pid 0 of b differ
    assert {(s.dsetid, s.camid) for s in combined} == {(0, 0), (0, 1), (1, 2), (1, 4)}  # b's cameras after a's
    assert combined[3].pid != combined[0].pid


def test_combineall_adds_test_identities_as_new_classes_without_junk_or_distractors() -> None:
    data = _toy("msmt", [(0, 0), (1, 1)], test=[(0, 2), (0, 3), (7, 2), (-1, 0), (9, 1)], distractors=frozenset({9}))
    combined = combine_train_sets([data], combineall=True)
    assert len(combined) == 5 and sorted({s.pid for s in combined}) == [0, 1, 2, 3]
    train_zero = {s.pid for s in combined if "/train/" in s.path and s.path.endswith("0.jpg")}
    test_zero = {s.pid for s in combined if "/test/" in s.path and s.path.endswith(("0.jpg", "1.jpg"))}
    assert train_zero.isdisjoint(test_zero)  # both numbered 0 in the files, distinct classes here


def test_combining_market1501_keeps_every_training_identity_and_image(tmp_path: Path) -> None:
    folder = make_market(tmp_path)
    make_files(folder / "bounding_box_train", ["0000_c1s1_000001_01.jpg"])  # a distractor is never a class
    data = build_dataset("market1501", tmp_path)
    assert len(data.train) == 4 and data.num_train_pids == 3
    combined = combine_train_sets([data])
    assert sorted(s.path for s in combined) == sorted(s.path for s in data.train)  # 0002 (label 0) kept
    assert len({s.pid for s in combined}) == 3
    everything = combine_train_sets([data], combineall=True)
    assert len(everything) == 4 + 2 + 3 and len({s.pid for s in everything}) == 3 + 2  # distractor 0000 left out


def test_build_dataset_rejects_unknown_names_and_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="market1501"):
        build_dataset("market1051", tmp_path)
    with pytest.raises(ConfigError, match="split"):
        build_dataset("market1501", tmp_path, split="half")
    assert set(DATASETS) == {"market1501", "dukemtmcreid", "occluded_duke", "msmt17", "cuhk03_np", "occluded_reid",
                             "partial_reid", "partial_ilids", "p_dukemtmc", "custom", "synthetic"}


def test_misnamed_folder_error_names_the_closest_folder(tmp_path: Path) -> None:
    folder = make_market(tmp_path)
    (folder / "bounding_box_train").rename(folder / "bounding_box_trian")
    with pytest.raises(DatasetError) as err:
        build_dataset("market1501", tmp_path)
    message = str(err.value)
    assert "bounding_box_trian" in message and "bounding_box_train/" in message and "query/" in message
