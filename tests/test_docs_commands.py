"""The commands that README.md and docs/ show, run as written on tiny data.

Every line of every ```bash block is either run (`RUNS`: in one shared folder laid out as
the docs assume, with the few listed substitutions that make it tiny) or skipped by name
(`SKIPPED_BY_DESIGN`, with the reason). A documented command that is neither fails the
suite, so a new or edited command must be classified here; a classified command that the
docs no longer show fails too, so this list cannot go stale.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = ("README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")))
FENCE = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", re.S)

# A run short enough for a test: ResNet-18 at 32x16, one epoch, the CPU in fp32.
TINY_TRAINING = ("data.height=32 data.width=16 data.batch_size=16 data.num_workers=0 model.backbone=resnet18 "
                 "train.epochs=1 train.device=cpu train.precision=fp32 train.progress_bar=false eval.num_workers=0")
NOT_PRETRAINED = "model.pretrained=false"   # the presets' ImageNet weights cannot be downloaded here
# Paths the docs use for the reader's own data, and where the shared folder keeps them.
PATHS = (("/data/reid", "data/reid"), ("/data", "data"), ("CKPT", "best.pth"), ("runs/my_run", "runs/demo"))


@dataclass(frozen=True)
class Run:
    """How a documented command runs here: `append` adds settings that make it tiny,
    `replace` swaps text (beyond `PATHS`), `server` waits for its page and stops it."""

    append: str = ""
    replace: tuple[tuple[str, str], ...] = ()
    server: bool = False
    in_repo: bool = False


TRAIN = Run(append=f"{TINY_TRAINING} {NOT_PRETRAINED}")
RUNS: dict[str, Run] = {
    # README.md
    "source .venv/bin/activate": Run(in_repo=True),
    "igoas serve runs/demo/checkpoints/best.pth --gallery data/synthetic --dataset synthetic": Run(server=True),
    # docs/datasets.md
    "igoas data check /data --dataset market1501": Run(),
    "igoas data synth data/synthetic --seed 0": Run(append="--size tiny",
                                                    replace=(("data/synthetic", "data/synthetic_rendered"),)),
    "igoas data check /data/shop --dataset custom": Run(),
    "igoas data stats /data/shop --dataset custom": Run(),
    "igoas train custom_igoas data.root=/data/shop": TRAIN,
    # docs/training.md
    "igoas train occluded_duke_igoas data.root=/data/reid": TRAIN,
    "igoas train --resume runs/occluded_duke_igoas": Run(),
    "igoas eval --weights runs/occluded_duke_igoas/checkpoints/best.pth": Run(),
    "igoas train --presets": Run(),
    "igoas train my_run.yaml optim.lr=0.00035 optim.milestones=[30,60] loss.triplet=soft": TRAIN,
    "igoas train occluded_duke_igoas model.pretrained=/weights/resnet50.pth --out runs/mine":
        Run(append=TINY_TRAINING, replace=(("/weights/resnet50.pth", "weights/resnet18.pth"),)),
    # docs/inference.md
    "igoas extract best.pth photos/ --out photos.safetensors": Run(),
    "igoas extract best.pth photos/ --shards photo_shards/": Run(),
    "igoas extract best.pth data/occluded-duke --dataset occluded_duke --split gallery --shards gallery_shards/ "
    "--shard-size 4096": Run(),
    "torchrun --standalone --nproc_per_node 2 -m igoas extract best.pth photos/ --shards photo_shards_2/": Run(),
    "igoas extract best.pth data/occluded-duke --dataset occluded_duke --split gallery --out gallery.npz": Run(),
    "igoas search build gallery.npz --index gallery.faiss": Run(),
    "igoas search query gallery.faiss query/0001_c1_f0001.jpg --topk 10 --draw ranked.png": Run(),
    "igoas extract best.pth data/occluded-duke --dataset occluded_duke --split query --out query.npz": Run(),
    "igoas search query gallery.faiss --features query.npz --topk 10": Run(),
    "igoas export best.pth --format onnx": Run(),
    "igoas export best.pth --format torchscript --out model.pt": Run(),
    "igoas export best.pth --format onnx --int8 --calibration data/synthetic/bounding_box_train --out best_int8.onnx":
        Run(),
    # docs/serve.md
    "igoas serve best.pth --gallery gallery.faiss --dataset occluded_duke --root data/occluded-duke": Run(server=True),
    "igoas serve best.pth --gallery gallery.npz --queries my_queries/": Run(server=True),
    # docs/figures.md
    "igoas viz activations CKPT --dataset occluded_duke --root data/ --num 6 --out fig8.png": Run(),
    "igoas viz activations CKPT --images a.jpg b.jpg folder/ --out fig8.png": Run(),
    "igoas viz occlusion --dataset synthetic --root data/synthetic --num 4 --epochs 0,15,30,45,60,89 --out methods.png":
        Run(),
    "igoas viz ranked CKPT --dataset occluded_duke --root data/ --num-queries 8 --topk 10 --out ranked.png": Run(),
    "igoas viz cmc igoas.pth baseline.pth --dataset occluded_duke --root data/ --out cmc.png": Run(),
    "igoas viz compare baseline.pth erasing.pth batch_erasing.pth igoas.pth --labels "
    '"baseline,random erasing,batch erasing,IGO" --dataset occluded_duke --root data/ --num 4 --out fig9.png': Run(),
    "igoas robustness igoas.pth baseline.pth --labels IGOAS,baseline --dataset occluded_duke --root data/ "
    "--areas 0,10,20,30,40,50,60 --positions top,bottom,left,right,random --occluder rectangle --out stress/":
        Run(replace=(("0,10,20,30,40,50,60", "0,30"),)),
    "igoas viz curves runs/my_run": Run(),
    "igoas viz distances CKPT --dataset occluded_duke --root data/ --out-dir figs/": Run(),
    "igoas viz report runs/my_run": Run(),
}

HOURS = "trains the published recipe or a study for hours"
REAL_DATA = "reads a dataset layout the shared folder does not fake (its parsing: tests/data/test_data_datasets.py)"
BENCHMARK = "a benchmark: its own tests are tests/benchmarks/test_benchmark_*.py, and timings have no place in the suite"
SKIPPED_BY_DESIGN: dict[str, str] = {
    "make demo": "the eight-minute demo; `igoas demo --quick` runs in tests/studies/test_demo.py",
    "make test": "the suite itself",
    "scripts/reproduce.sh table1 /data/reid": HOURS,
    "scripts/reproduce.sh table2 /data/reid": HOURS,
    "scripts/reproduce.sh table3 /data/reid": HOURS,
    "torchrun --standalone --nproc_per_node 2 -m igoas train occluded_duke_igoas data.root=/data/reid": HOURS,
    "igoas reproduce table1 --check runs/occluded_duke_igoas": "needs a finished published run (tests/studies/test_reproduce.py)",
    "scripts/study.sh": HOURS,
    "igoas pretrain": HOURS,
    "igoas ablation --seeds 3 --out runs/study --records docs/ablation/study": HOURS,
    "igoas ablation --reduced --seeds 1 --out /tmp/check": "minutes of training; its pipeline runs in tests/studies/test_ablation.py",
    'study="--out runs/study --records docs/ablation/study train.cpu_threads=1"': HOURS,
    "igoas ablation --seeds 1,2 --methods igoas_no_osm igo_fixed $study &": HOURS,
    "(igoas ablation --seeds 2,3 --methods random_erasing batch_dropblock $study &&": HOURS,
    "igoas ablation --seeds 3 --methods igoas_no_osm igo_fixed $study) &": HOURS,
    "wait; igoas ablation --seeds 3 --out runs/study --records docs/ablation/study": HOURS,
    "igoas data synth /tmp/synthetic_small --size small": BENCHMARK,
    "igoas train synthetic_demo_quick --out /tmp/demo_quick data.root=/tmp/synthetic_small data.options.size=small":
        BENCHMARK,
    "time igoas robustness /tmp/demo_quick/checkpoints/best.pth --suite corruptions --dataset synthetic "
    "--root /tmp/synthetic_small --num-workers 2 --out /tmp/corruptions": BENCHMARK,
    "python benchmarks/inference.py --images 32 --batch-size 16 --repeats 3": BENCHMARK,
    "python benchmarks/inference.py --checkpoint runs/demo/checkpoints/best.pth --eval-root data/synthetic": BENCHMARK,
    "python benchmarks/inference.py --checkpoint best.pth --eval-root data/synthetic": BENCHMARK,
    "python benchmarks/inference.py --threads 1": BENCHMARK,
    "python benchmarks/formats.py --checkpoint best.pth --data data/synthetic": BENCHMARK,
    "python benchmarks/formats.py --smoke": BENCHMARK,
    "python benchmarks/formats.py --checkpoint runs/demo/checkpoints/best.pth --data data/synthetic": BENCHMARK,
    ".venv/bin/python benchmarks/train_step.py": BENCHMARK,
    ".venv/bin/python benchmarks/train_step.py --backbone resnet18 --batch 4 --height 128 --width 64 --repeats 2":
        BENCHMARK,
    "bash benchmarks/gpu_check.sh": "needs a GPU machine",
    "echo /.whl/ >> .git/info/exclude": "preparing a GPU machine's wheels",
    "pip show omegaconf | grep Version": "preparing a GPU machine's wheels",
    "python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "
    "--platform manylinux2014_x86_64 -d .whl omegaconf==2.4.0": "preparing a GPU machine's wheels (downloads)",
    "igoas data stats /data --dataset occluded_reid -o split=half": REAL_DATA,
    "igoas extract best.pth /data --dataset occluded_reid -o split=half --out query.npz": REAL_DATA,
    "igoas robustness best.pth --dataset occluded_reid --root /data -o split=half --out stress/": REAL_DATA,
    "igoas extract best.pth data/ --dataset occluded_reid -o split=half --split train --out half_train.npz": REAL_DATA,
    "igoas extract best.pth data/ --dataset partial_reid -o query_folder=partial_body_images --out partial.npz":
        REAL_DATA,
    "igoas data check ROOT --dataset NAME [-o key=value ...] [--no-images] [--strict] [--max-items 20] "
    "[--num-workers 4]": "a usage synopsis, not a command",
    "igoas robustness igoas.pth baseline.pth --labels IGOAS,baseline --suite corruptions --dataset market1501 "
    "--root data/ --workers 8 --cache cache/corruptions --out corruptions/": "about an hour per model on a CPU",
    "igoas viz cmc runs/igoas/metrics.json runs/baseline/metrics.json --labels IGOAS,baseline --out cmc.png":
        "names two of the reader's trained runs",
    "pip install \"igoas[corruptions]\"": "an install; `make test`'s environment has every extra",
    'pip install -e ".[serve]"': "an install; `make test`'s environment has every extra",
    "igoas demo": "the eight-minute demo; `igoas demo --quick` runs in tests/studies/test_demo.py",
    "torchrun --standalone --nproc_per_node 2 -m igoas train occluded_duke_igoas": "multi-process training: tests/compute/test_distributed.py",
    "torchrun --standalone --nproc_per_node 4 -m igoas train occluded_duke_igoas train.replicas=1":
        "multi-process training: tests/compute/test_distributed.py",
    "torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST0:29500 "
    "-m igoas train occluded_duke_igoas train.replicas=1": "two machines",
    "torchrun --standalone --nproc_per_node 2 -m igoas train synthetic_demo train.device=cpu":
        "multi-process training: tests/compute/test_distributed.py",
    "igoas import-official log/bfe/model/model-best.pth.tar --out runs/official/best.pth":
        "needs a checkpoint of the authors' code (tests/interop/test_official.py builds one)",
    "igoas export-official runs/mine/checkpoints/best.pth --out model-best.pth.tar [--epoch 60] [--rank1 0.601]":
        "a usage synopsis; tests/interop/test_official.py runs it",
}


def documented_commands(doc: str) -> list[str]:
    """The command lines of a page's shell blocks: continuations joined, comments and
    blank lines dropped, runs of spaces collapsed."""
    commands = []
    for block in FENCE.findall((REPO / doc).read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(re.sub(r"\s+", " ", command))
    return commands


def test_every_documented_command_is_run_or_skipped_by_name() -> None:
    unclassified = [f"{doc}: {command}" for doc in DOC_FILES for command in documented_commands(doc)
                    if command not in RUNS and command not in SKIPPED_BY_DESIGN]
    assert not unclassified, ("documented commands neither run nor skipped by name; add them to RUNS or "
                              "SKIPPED_BY_DESIGN in tests/test_docs_commands.py:\n" + "\n".join(unclassified))


def test_every_classified_command_is_still_documented() -> None:
    shown = {command for doc in DOC_FILES for command in documented_commands(doc)}
    stale = sorted((set(RUNS) | set(SKIPPED_BY_DESIGN)) - shown)
    assert not stale, "classified commands the docs no longer show:\n" + "\n".join(stale)


def _as_run_here(command: str, run: Run) -> str:
    for old, new in (*run.replace, *PATHS):
        command = command.replace(old, new)
    return f"{command} {run.append}".strip()


def _environment() -> dict[str, str]:
    """The test's environment with its interpreter's scripts first on PATH, as after
    `source .venv/bin/activate`."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(command: str, cwd: Path) -> None:
    """Start the page, wait until it answers, stop it."""
    port = _free_port()
    process = subprocess.Popen(f"{command} --port {port}", shell=True, cwd=cwd, env=_environment(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"`{command}` exited with {process.returncode}:\n{process.stdout.read()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    assert answer.status == 200
                    return
            except OSError:
                time.sleep(1)
        pytest.fail(f"`{command}` did not answer within 240 s")
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def run_documented(command: str, cwd: Path) -> None:
    run = RUNS[command]
    here = _as_run_here(command, run)
    if run.server:
        return _serve(here, cwd)
    if run.in_repo:   # the activation script belongs to the checkout the suite runs from
        if not (REPO / ".venv" / "bin" / "activate").is_file():
            pytest.skip("no .venv in this checkout: the suite runs in another environment")
        here, cwd = f"{here} && command -v igoas", REPO
    result = subprocess.run(["bash", "-c", here], cwd=cwd, env=_environment(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"`{command}` (run as `{here}`) failed:\n{result.stdout}\n{result.stderr}"


def _duke_copy(synthetic: Path, top: Path) -> None:
    """The synthetic set renamed into the Occluded-Duke layout (`0001_c1_f0000151.jpg`)."""
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        (top / split).mkdir(parents=True)
        for image in sorted((synthetic / split).glob("*.jpg")):
            pid, camera, frame = re.match(r"(-?\d+)_c(\d)s\d_(\d+)_\d+\.jpg", image.name).groups()
            if int(pid) >= 0:
                shutil.copy(image, top / split / f"{int(pid):04d}_c{camera}_f{int(frame):07d}.jpg")


@pytest.fixture(scope="module")
def shared_folder(synthetic_root: Path, random_trunk: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder laid out as the docs assume: `data/` with the synthetic set, a Market-1501
    copy, an Occluded-Duke copy and a custom folder; the demo run; `best.pth`; a few photos."""
    root = tmp_path_factory.mktemp("docs")
    data = root / "data"
    shutil.copytree(synthetic_root, data / "synthetic")
    shutil.copytree(synthetic_root, data / "Market-1501-v15.09.15")
    shutil.copytree(synthetic_root, data / "shop")
    _duke_copy(synthetic_root, data / "reid" / "occluded-duke" / "Occluded_Duke")
    (data / "occluded-duke").symlink_to(Path("reid") / "occluded-duke")
    (root / "weights").mkdir()
    shutil.copy(random_trunk, root / "weights" / "resnet18.pth")
    (root / "my_run.yaml").write_text("base: occluded_duke_igoas\ndata:\n  root: data/reid\ntrain:\n  output_dir: runs/my_yaml_run\n", encoding="utf-8")
    queries = sorted((data / "reid" / "occluded-duke" / "Occluded_Duke" / "query").glob("*.jpg"))
    for folder, count in (("photos", 3), ("my_queries", 2), ("folder", 2)):
        (root / folder).mkdir()
        for image in queries[:count]:
            shutil.copy(image, root / folder / image.name)
    shutil.copy(queries[0], root / "a.jpg")
    shutil.copy(queries[1], root / "b.jpg")
    (root / "query").mkdir()
    shutil.copy(queries[0], root / "query" / "0001_c1_f0001.jpg")
    demo = (f"igoas train synthetic_demo_quick --out runs/demo data.root=data/synthetic {TINY_TRAINING} "
            f"{NOT_PRETRAINED}")
    gallery = ("igoas extract best.pth data/occluded-duke --dataset occluded_duke --split gallery --out gallery.npz"
               " && igoas search build gallery.npz --index gallery.faiss")
    for setup in (demo, "cp runs/demo/checkpoints/best.pth best.pth && for name in igoas baseline erasing "
                  "batch_erasing; do cp best.pth $name.pth; done", gallery):
        result = subprocess.run(["bash", "-c", setup], cwd=root, env=_environment(), capture_output=True, text=True)
        assert result.returncode == 0, f"setting up `{setup}` failed:\n{result.stdout}\n{result.stderr}"
    return root


# Pages run two at a time (each page's commands in order): the commands are single-threaded
# subprocesses whose start-up (torch and torchvision imports) dominates, so this halves the wall time.
PARALLEL_PAGES = 2
PAGES_WITH_RUNS = [doc for doc in DOC_FILES if any(c in RUNS for c in documented_commands(doc))]


def _page_groups(pages: list[str]) -> list[list[str]]:
    """The pages in groups that run one after another: pages sharing a command go together
    (in the order of DOC_FILES), since a later command on one may need an earlier one's output
    (a resume needs the training that another page shows first)."""
    groups: list[list[str]] = []
    for doc in pages:
        commands = {c for c in documented_commands(doc) if c in RUNS}
        joined = [group for group in groups if commands & {c for d in group for c in documented_commands(d)}]
        merged = [d for group in joined for d in group] + [doc]
        groups = [group for group in groups if group not in joined] + [merged]
    return sorted(groups, key=lambda group: -sum(c in RUNS for d in group for c in documented_commands(d)))


def _run_pages(group: list[str], folder: Path) -> dict[str, BaseException | None]:
    """Each page's commands in order, each command once (its first page runs it); a page's
    first failure (or skip) is returned as its outcome, not raised."""
    outcomes: dict[str, BaseException | None] = {}
    done: set[str] = set()
    for doc in group:
        outcomes[doc] = None
        try:
            for command in documented_commands(doc):
                if command in RUNS and command not in done:
                    done.add(command)
                    run_documented(command, folder)
        except (AssertionError, pytest.fail.Exception, pytest.skip.Exception, subprocess.TimeoutExpired) as outcome:
            outcomes[doc] = outcome
    return outcomes


@pytest.fixture(scope="module")
def page_outcomes(shared_folder: Path, request: pytest.FixtureRequest) -> dict[str, BaseException | None]:
    """Every selected page run, `PARALLEL_PAGES` groups of pages at a time, the longest first."""
    from concurrent.futures import ThreadPoolExecutor

    selected = {item.callspec.params["doc"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_documented_commands_run_as_written"}
    groups = _page_groups([doc for doc in PAGES_WITH_RUNS if doc in selected])
    outcomes: dict[str, BaseException | None] = {}
    with ThreadPoolExecutor(PARALLEL_PAGES) as pool:
        for result in pool.map(lambda group: _run_pages(group, shared_folder), groups):
            outcomes.update(result)
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("doc", PAGES_WITH_RUNS)
def test_documented_commands_run_as_written(doc: str, page_outcomes: dict[str, BaseException | None]) -> None:
    outcome = page_outcomes[doc]
    if outcome is not None:
        raise outcome
