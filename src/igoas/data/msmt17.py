"""MSMT17: images listed in `list_*.txt` files (`relative/path.jpg pid` per line), the
camera read from the third `_` field of the file name; v1 and v2 folder layouts."""
from __future__ import annotations

from pathlib import Path

from igoas.data.base import INT64_MAX, ReIDDataset, Sample, UnparsedFile, raise_if_unparsed, read_list_file, relabel
from igoas.data.layout import locate_root
from igoas.utils.errors import DatasetError

LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
# version -> (folder candidates, training image folder, test image folder)
LAYOUTS = {
    "v1": (("msmt17/MSMT17_V1", "MSMT17_V1", "msmt17", ""), "train", "test"),
    "v2": (("msmt17/MSMT17_V2", "MSMT17_V2", "msmt17", ""), "mask_train_v2", "mask_test_v2"),
}
LINE_PATTERN = "relative/path.jpg PID, the file named PPPP_III_CC_..., CC the 1-based camera"
LINE_EXAMPLE = "0000/0000_000_01_0303morning_0015_0.jpg 0"
PUBLISHED = {"train": (1041, 32621), "query": (3060, 11659), "gallery": (3060, 82161)}


def read_list(list_file: Path, image_dir: Path) -> tuple[list[Sample], list[UnparsedFile]]:
    """Samples of one list file; malformed lines are returned apart (with their line number)."""
    samples, unparsed = [], []
    for number, line in enumerate(read_list_file(list_file), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            rel, pid = fields[0], int(fields[1])
            camid = int(Path(rel).name.split("_")[2]) - 1
            if abs(pid) > INT64_MAX:
                raise ValueError("identity beyond 64 bits")
        except (IndexError, ValueError):
            unparsed.append(UnparsedFile(f"{list_file}:{number}: {line.strip()}", LINE_PATTERN, LINE_EXAMPLE))
            continue
        samples.append(Sample(str(image_dir / rel), pid, camid))
    return samples, unparsed


def msmt17(root: str | Path, *, version: str = "auto", combine_train_val: bool = True,
           strict: bool = True) -> ReIDDataset:
    """MSMT17, same-camera protocol, 15 cameras.

    `combine_train_val` trains on list_train + list_val (1,041 identities, the usual
    choice); `version` is "v1", "v2" or "auto" (whichever layout is present).
    """
    if version != "auto" and version not in LAYOUTS:
        raise DatasetError(f"msmt17: version {version!r} is not one of auto, {', '.join(LAYOUTS)}.")
    folder, version = _locate(root, version)
    _, train_dir, test_dir = LAYOUTS[version]
    parts, unparsed = {}, []
    for key, image_dir in zip(LISTS, (train_dir, train_dir, test_dir, test_dir)):
        parts[key], bad = read_list(folder / key, folder / image_dir)
        unparsed += bad
    raise_if_unparsed("msmt17", unparsed, strict)
    train = parts["list_train.txt"] + (parts["list_val.txt"] if combine_train_val else [])
    return ReIDDataset(
        name="msmt17",
        root=str(folder),
        train=relabel(train),
        query=parts["list_query.txt"],
        gallery=parts["list_gallery.txt"],
        protocol_info={"protocol": "same_camera", "version": version},
        unparsed_files=unparsed,
    )


def _locate(root: str | Path, version: str) -> tuple[Path, str]:
    """The folder of the requested layout, or of whichever is present under "auto"."""
    errors = []
    for name in LAYOUTS if version == "auto" else (version,):
        candidates, train_dir, test_dir = LAYOUTS[name]
        try:
            return locate_root(root, f"msmt17 ({name})", candidates, (train_dir, test_dir, *LISTS)), name
        except DatasetError as err:
            errors.append(str(err))
    raise DatasetError("\n".join(errors))
