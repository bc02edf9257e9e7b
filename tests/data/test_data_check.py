"""`igoas data check` on clean and broken copies: message, exit code, never a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from factories import bomb_png, image_bytes, make_files, make_market, write_msmt17

from igoas.cli import main


def run_check(capsys: pytest.CaptureFixture, root: Path, *extra: str, dataset: str = "market1501") -> tuple[int, str]:
    code = main(["data", "check", str(root), "--dataset", dataset, *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_clean_copy_passes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_market(tmp_path)
    code, out = run_check(capsys, tmp_path)
    assert code == 0 and "no problems found" in out
    assert "counts differ from a complete copy" in out  # a note only: a tiny copy is not an error


def test_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = run_check(capsys, tmp_path / "nowhere")
    assert code == 1 and "does not exist" in out and "bounding_box_train/" in out


def test_misnamed_split_folder_shows_tree_and_closest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_market(tmp_path)
    (folder / "bounding_box_test").rename(folder / "bounding_box_tests")
    code, out = run_check(capsys, tmp_path)
    assert code == 1
    assert "closest found" in out and "bounding_box_tests" in out
    assert "Expected layout" in out and "ROOT/market1501/Market-1501-v15.09.15/" in out


def test_misnamed_top_folder_is_pointed_at(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_market(tmp_path, "Market-1501-v15.09")
    code, out = run_check(capsys, tmp_path)
    assert code == 1 and "Market-1501-v15.09'" in out and "it holds the expected folders" in out


def test_unparsable_names_listed_with_pattern(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_market(tmp_path)
    make_files(folder / "bounding_box_train", ["IMG_0001.jpg", "person-2.jpg"])
    code, out = run_check(capsys, tmp_path)
    assert code == 1 and "names that do not parse (2)" in out
    assert "PPPP_cCsS_FFFFFF_BB.jpg" in out and "IMG_0001.jpg" in out and "person-2.jpg" in out


@pytest.mark.parametrize(
    "content, expected",
    [(b"", "zero-byte files (1)"), (b"GIF89a not really", "unreadable images (1)"),
     ("truncated", "truncated images (1)"), ("bomb", "images with too many pixels (1)")],
)
def test_broken_image_files(tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes | str, expected: str) -> None:
    folder = make_market(tmp_path)
    target = folder / "bounding_box_train" / "0002_c1s1_000451_03.jpg"
    if content == "truncated":
        large = tmp_path / "large.jpg"
        Image.effect_noise((64, 128), 60).convert("RGB").save(large, quality=95)
        content = large.read_bytes()[:-400]
    if content == "bomb":  # a valid 10000 x 10000 header over almost no data: refused before decoding

        content = bomb_png(10000, 10000)
    target.write_bytes(content)
    code, out = run_check(capsys, tmp_path)
    assert code == 1 and expected in out and "0002_c1s1_000451_03.jpg" in out


def test_non_rgb_is_a_warning_unless_strict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_market(tmp_path)
    (folder / "query" / "0003_c1s1_001051_00.jpg").write_bytes(image_bytes(mode="L"))
    code, out = run_check(capsys, tmp_path)
    assert code == 0 and "WARNING: images that are not RGB (1)" in out and "(L)" in out
    assert run_check(capsys, tmp_path, "--strict")[0] == 1


def test_empty_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_market(tmp_path)
    for file in (folder / "query").iterdir():
        file.unlink()
    code, out = run_check(capsys, tmp_path)
    assert code == 1 and "empty split: query" in out


def test_query_identity_missing_from_gallery(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_market(tmp_path)
    make_files(folder / "query", ["0042_c2s1_000100_00.jpg"])
    code, out = run_check(capsys, tmp_path)
    assert code == 1 and "query identities missing from the gallery (1)" in out and "identity 42" in out


def test_query_matched_only_by_its_own_camera_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_market(tmp_path)
    (folder / "bounding_box_test" / "0003_c2s1_001101_01.jpg").rename(folder / "bounding_box_test" / "0003_c1s1_001101_01.jpg")
    code, out = run_check(capsys, tmp_path)
    assert code == 0 and "queries without a gallery match from another camera (1)" in out


def test_duplicate_list_entries_and_missing_listed_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = write_msmt17(tmp_path)
    lines = (folder / "list_gallery.txt").read_text()
    (folder / "list_gallery.txt").write_text(lines + lines.splitlines()[0] + "\n0009/0009_000_03_x_0001_0.jpg 9\n")
    code, out = run_check(capsys, tmp_path, dataset="msmt17")
    assert code == 1 and "duplicate entries (1)" in out and "missing files (1)" in out
    assert "0009_000_03_x_0001_0.jpg" in out


def test_identical_images_under_different_names(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_market(tmp_path)
    same = (folder / "query" / "0003_c1s1_001051_00.jpg").read_bytes()
    (folder / "bounding_box_test" / "0003_c2s1_001101_01.jpg").write_bytes(same)
    code, out = run_check(capsys, tmp_path)
    assert code == 0 and "identical images under different names (1)" in out


def test_cross_set_dataset_without_train_split_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "Partial_iLIDS"
    make_files(folder / "Probe", ["001.jpg", "002.jpg"])
    make_files(folder / "Gallery", ["001.jpg", "002.jpg"])
    code, out = run_check(capsys, tmp_path, dataset="partial_ilids")
    assert code == 0 and "empty split" not in out


def test_unknown_dataset_and_option_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = run_check(capsys, tmp_path, dataset="market")
    assert code == 2 and "unknown dataset" in out and "Traceback" not in out
    make_market(tmp_path)
    code, out = run_check(capsys, tmp_path, "-o", "variant=labeled")
    assert code == 2 and "no option(s) variant" in out


def test_no_images_skips_decoding(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_market(tmp_path)
    (folder / "query" / "0003_c1s1_001051_00.jpg").write_bytes(b"")
    assert run_check(capsys, tmp_path, "--no-images")[0] == 0


def test_stats_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_market(tmp_path)
    assert main(["data", "stats", str(tmp_path), "--dataset", "market1501"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "751/12936" in out


def test_custom_evaluation_only_lists_are_clean(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_files(tmp_path / "images", ["q.jpg", "g1.jpg", "g2.jpg"])
    (tmp_path / "query.txt").write_text("images/q.jpg anna cam1\n")
    (tmp_path / "gallery.txt").write_text("images/g1.jpg anna cam2\nimages/g2.jpg ben cam1\n")
    code, out = run_check(capsys, tmp_path, dataset="custom")
    assert code == 0 and "no problems found" in out
