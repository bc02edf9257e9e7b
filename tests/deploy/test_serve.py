"""`igoas serve`: the gallery back ends, upload checks, the web app through its test client,
and (slow) the page in a real headless Chromium."""
from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import threading
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from igoas.utils.errors import IgoasError
from igoas.deploy.extraction import dataset_images, extract
from igoas.deploy.inference import ReIDModel
from igoas.retrieval import GalleryIndex
from igoas.deploy.serve import Occlusion, SearchService, UploadError, build_service, decode_upload, load_gallery, rank

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from igoas.deploy.serve.app import create_app  # noqa: E402

TOPK = 5


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid PNG header declaring a huge image, followed by a tiny compressed body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(
        b"IEND", b"")


@pytest.fixture(scope="module")
def service(tiny_checkpoint: Path, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SearchService:
    cache = tmp_path_factory.mktemp("serve_cache")
    return build_service(tiny_checkpoint, synthetic_root, dataset="synthetic", cache_dir=cache, precision="fp32",
                         progress=False)


@pytest.fixture(scope="module")
def client(service: SearchService) -> TestClient:
    return TestClient(create_app(service), raise_server_exceptions=False)


# ----------------------------------------------------------------------------- uploads
def test_decode_upload_accepts_an_image() -> None:
    image = decode_upload(_png(20, 40))
    assert image.shape == (3, 40, 20) and image.dtype == torch.uint8


@pytest.mark.parametrize("data, status, words", [
    (b"", 400, "empty"),
    (b"%PDF-1.4 not a picture", 400, "not an image"),
    (_png(20, 40)[:60], 400, "damaged"),
    (_bomb_png(6_000, 6_000), 413, "6000 x 6000 pixels, more than"),  # over our cap
    (_bomb_png(), 413, "decompression bomb"),  # over PIL's own guard, which stops it even earlier
], ids=["empty", "not-an-image", "truncated", "large", "bomb"])
def test_decode_upload_refuses_with_a_reason(data: bytes, status: int, words: str) -> None:
    with pytest.raises(UploadError, match=words) as caught:
        decode_upload(data, "photo.png")
    assert caught.value.status == status and "photo.png" in str(caught.value)


def test_decode_upload_size_and_pixel_caps() -> None:
    with pytest.raises(UploadError, match="larger than the 1 kB limit") as caught:
        decode_upload(b"x" * 2048, max_bytes=1024)
    assert caught.value.status == 413
    with pytest.raises(UploadError, match="larger than the 1.5 MB limit"):
        decode_upload(b"x" * (3 * 2**19 + 1), max_bytes=3 * 2**19)
    with pytest.raises(UploadError, match="more than the 500 allowed"):
        decode_upload(_png(30, 30), max_pixels=500)


# ----------------------------------------------------------------------------- gallery back ends
def test_gallery_embeddings_are_cached_and_reused(tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32")
    first = load_gallery(model, synthetic_root, "synthetic", cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_embedding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached embeddings should have been used")

    monkeypatch.setattr("igoas.deploy.serve.gallery.extract", no_embedding)
    second = load_gallery(model, synthetic_root, "synthetic", cache_dir=tmp_path, progress=False)
    assert second.paths == first.paths
    np.testing.assert_array_equal(second.reconstruct(np.arange(len(second))), first.reconstruct(np.arange(len(first))))


def test_an_unwritable_cache_is_a_warning_not_a_failure(tiny_checkpoint: Path, synthetic_root: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    model = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32")
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    gallery = load_gallery(model, synthetic_root, "synthetic", cache_dir=blocked, progress=False)
    assert len(gallery) == len(dataset_images("synthetic", synthetic_root, "gallery").paths)
    assert "not cached" in capsys.readouterr().err


def test_index_features_and_folder_back_ends_rank_alike(tiny_checkpoint: Path, synthetic_root: Path,
                                                        tmp_path: Path) -> None:
    model = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32")
    features = extract(model, dataset_images("synthetic", synthetic_root, "gallery"), tmp_path / "gallery.npz")
    GalleryIndex.build(features).save(tmp_path / "gallery.faiss")
    query = model.embed(dataset_images("synthetic", synthetic_root, "query").paths[:1])[0]
    rankings = [rank(load_gallery(model, source, "synthetic", cache_dir=tmp_path / "cache", progress=False),
                     query, TOPK).indices
                for source in (tmp_path / "gallery.faiss", tmp_path / "gallery.npz", synthetic_root)]
    np.testing.assert_array_equal(rankings[0], rankings[1])
    np.testing.assert_array_equal(rankings[0], rankings[2])


def test_a_compressed_index_from_search_build_serves_the_search(tiny_checkpoint: Path, synthetic_root: Path,
                                                                 tmp_path: Path) -> None:
    from igoas.retrieval import features_from_arrays

    model = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32")
    dim = model.embed(dataset_images("synthetic", synthetic_root, "query").paths[:1]).shape[1]
    rows = np.random.default_rng(0).standard_normal((600, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    features = features_from_arrays(rows, [f"{i}.jpg" for i in range(len(rows))])
    GalleryIndex.build(features, "ivf_pq", nlist=8, nprobe=8, pq_m=dim // 4).save(tmp_path / "gallery.faiss")
    gallery = load_gallery(model, tmp_path / "gallery.faiss")
    assert gallery.kind == "ivf_pq"
    found = rank(gallery, rows[3], TOPK).indices
    assert len(found) == TOPK and 3 in list(found)  # every list visited: the entry itself is among the nearest


def test_gallery_of_another_model_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from igoas.retrieval import features_from_arrays, save_features

    model = ReIDModel.from_checkpoint(tiny_checkpoint, precision="fp32")
    rows = np.eye(4, 16, dtype=np.float32)
    save_features(tmp_path / "other.npz", features_from_arrays(rows, [f"{i}.jpg" for i in range(4)]))
    with pytest.raises(IgoasError, match="16-d embeddings but the model makes"):
        load_gallery(model, tmp_path / "other.npz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(IgoasError, match="not a gallery"):
        load_gallery(model, tmp_path / "notes.txt")


def test_rank_applies_the_protocol_exclusions() -> None:
    from igoas.retrieval import features_from_arrays

    rows = np.eye(6, 6, dtype=np.float32) + 0.5
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    pids, cams = [1, 1, 2, -1, 1, 3], [0, 1, 0, 0, 2, 0]
    gallery = GalleryIndex.build(features_from_arrays(rows, [f"{i}.jpg" for i in range(6)], pids, cams))
    ranking = rank(gallery, rows[0], topk=6, pid=1, camid=0)
    assert 0 not in ranking.indices and 3 not in ranking.indices  # same identity and camera; junk
    assert ranking.matches == [bool(pids[i] == 1) for i in ranking.indices]
    assert np.all(np.diff(ranking.distances) >= 0)
    unknown = rank(gallery, rows[0], topk=6)
    assert len(unknown.indices) == 6 and unknown.matches == [None] * 6 and unknown.indices[0] == 0
    reranked = rank(gallery, rows[0], topk=6, rerank=True)
    assert sorted(reranked.indices.tolist()) == list(range(6)) and np.all(np.diff(reranked.distances) >= 0)


def test_earlier_ranks_are_the_ranks_a_search_of_the_clean_query_shows() -> None:
    """Re-ranked distances depend on the shortlist re-ranked, so "was #n" with re-ranking
    must come from the shortlist a search of the unoccluded query re-ranks."""
    from igoas.retrieval import features_from_arrays
    from igoas.deploy.serve.gallery import earlier_ranks

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(400, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    pids, cams = rng.integers(0, 40, 400), rng.integers(0, 4, 400)
    gallery = GalleryIndex.build(features_from_arrays(rows, [f"{i}.jpg" for i in range(400)], pids, cams))
    for query, pid, camid in [(rows[3], -1, -1), (rows[7] + 0.1, int(pids[7]), int(cams[7]) + 1)]:
        query = query / np.linalg.norm(query)
        for rerank in (False, True):
            shown = rank(gallery, query, 30, pid, camid, rerank).indices
            positions, depth = earlier_ranks(gallery, query, 30, 1000, pid, camid, rerank)
            assert [positions[int(i)] for i in shown] == list(range(1, 31)), (pid, rerank)
            assert depth == (len(positions) if rerank else 1000) and (not rerank or depth <= 100)


def test_the_page_occludes_a_list_query_as_the_stress_test_does(service: SearchService, synthetic_root: Path) -> None:
    from igoas.data import build_dataset
    from igoas.robustness.occlusion_stress import OccludedImages

    dataset = build_dataset("synthetic", synthetic_root)
    assert service.queries.paths == [str(s.path) for s in dataset.query], "the list is the stress test's queries"
    preprocess = service.model.preprocess_config
    stress = OccludedImages(dataset.query, preprocess, 30.0, "random", seed=0)
    for index in (1, 4):
        _, shown = service.prepare(service.queries.paths[index], Occlusion(30.0, "random"), index)
        torch.testing.assert_close(preprocess.normalize(shown[None])[0], stress[index]["image"])
    first, second = (service.prepare(service.queries.paths[0], Occlusion(30.0, "random"), i)[1] for i in (0, 1))
    assert not torch.equal(first, second), "the occluder is drawn per query position"


# ----------------------------------------------------------------------------- the app
def test_page_offers_upload_query_list_and_options(client: TestClient, service: SearchService) -> None:
    page = client.get("/")
    assert page.status_code == 200
    for field in ('type="file" name="query"', 'name="query_index"', 'name="occlude"', 'name="rerank"',
                  'name="position"', 'name="area"'):
        assert field in page.text
    assert page.text.count("<option value=") == 5  # the occluder positions; queries are picked by thumbnail
    assert page.text.count('name="query_index"') == len(service.queries.paths)
    for index in range(len(service.queries.paths)):
        assert f'src="/queries/{index}/thumbnail.png"' in page.text


def test_query_thumbnails_are_served_by_list_position(client: TestClient, service: SearchService) -> None:
    from PIL import Image

    from igoas.deploy.serve.app import THUMBNAIL_HEIGHT

    answer = client.get("/queries/1/thumbnail.png")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(answer.content)) as thumbnail, Image.open(service.queries.paths[1]) as original:
        assert thumbnail.height == THUMBNAIL_HEIGHT
        assert abs(thumbnail.width / thumbnail.height - original.width / original.height) < 0.05
    count = len(service.queries.paths)
    for index in (str(count), "-1"):
        missing = client.get(f"/queries/{index}/thumbnail.png")
        assert missing.status_code == 404 and f"the query list has {count} entries" in missing.json()["error"]
    assert client.get("/queries/..%2F..%2Fetc%2Fpasswd/thumbnail.png").status_code in (404, 422)


def test_search_from_the_query_list_marks_matches(client: TestClient, service: SearchService) -> None:
    answer = client.post("/search", data={"query_index": "0", "topk": str(TOPK)})
    assert answer.status_code == 200
    assert answer.text.count('class="gallery-image"') == TOPK
    assert answer.text.count('alt="global map"') == TOPK + 1 and answer.text.count('alt="suppression map"') == TOPK + 1
    result = client.post("/api/search", data={"query_index": "0", "topk": str(TOPK)}).json()
    pid = service.queries.pids[0]
    assert result["pid"] == pid and len(result["results"]) == TOPK
    assert [r["match"] for r in result["results"]] == [r["pid"] == pid for r in result["results"]]
    distances = [r["distance"] for r in result["results"]]
    assert distances == sorted(distances) and all(d >= 0 for d in distances)
    marked = answer.text.count("card result match") + answer.text.count("card result mismatch")
    assert marked == TOPK
    query_camera = f"c{service.queries.camids[0] + 1}"  # as the file names write it (0010_c3s1_... is c3)
    assert f"id {pid} &middot; {query_camera}</div>" in answer.text and "cam " not in answer.text


def test_uploaded_query_equals_the_same_file_from_the_list(client: TestClient, service: SearchService) -> None:
    path = Path(service.queries.paths[1])
    uploaded = client.post("/api/search", files={"query": (path.name, path.read_bytes(), "image/jpeg")},
                           data={"topk": str(TOPK)}).json()
    chosen = client.post("/api/search", data={"query_index": "1", "topk": str(TOPK)}).json()
    assert uploaded["pid"] == -1 and all(r["match"] is None for r in uploaded["results"])
    # the upload has no identity, so nothing is excluded: its list contains the chosen one's in order
    chosen_indices = [r["index"] for r in chosen["results"]]
    assert [i for i in (r["index"] for r in uploaded["results"]) if i in chosen_indices] == \
        chosen_indices[: len([r for r in uploaded["results"] if r["index"] in chosen_indices])]


def test_occlusion_moves_the_ranking_and_reports_old_ranks(client: TestClient) -> None:
    clean = client.post("/api/search", data={"query_index": "0", "topk": str(TOPK)}).json()
    occluded = client.post("/api/search", data={"query_index": "0", "topk": str(TOPK), "occlude": "true",
                                                "area": "50", "position": "top"}).json()
    assert occluded["occlusion"] == {"area": 50.0, "position": "top"}
    clean_rank = {r["index"]: r["rank"] for r in clean["results"]}
    for result in occluded["results"]:
        if result["index"] in clean_rank:
            assert result["rank_unoccluded"] == clean_rank[result["index"]]
    assert [r["distance"] for r in occluded["results"]] != [r["distance"] for r in clean["results"]]
    page = client.post("/search", data={"query_index": "0", "topk": str(TOPK), "occlude": "true"})
    assert page.text.count('class="moved"') == TOPK


def test_reranking_option(client: TestClient) -> None:
    result = client.post("/api/search", data={"query_index": "2", "topk": str(TOPK), "rerank": "true"}).json()
    assert result["rerank"] is True and len(result["results"]) == TOPK
    distances = [r["distance"] for r in result["results"]]
    assert distances == sorted(distances)


class FormState(HTMLParser):
    """What a page's form shows: each input's value (radios and checkboxes: whether checked), each menu's choice."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.values: dict[str, object] = {}
        self.menu: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        name = attributes.get("name")
        if tag == "input" and attributes.get("type") in ("radio", "checkbox"):
            if attributes.get("type") == "checkbox":
                self.values[name] = "checked" in attributes
            elif "checked" in attributes:
                self.values[name] = attributes.get("value")
        elif tag == "input" and name:
            self.values[name] = attributes.get("value")
        elif tag == "select":
            self.menu = name
        elif tag == "option" and "selected" in attributes:
            self.values[self.menu] = attributes.get("value")


def _searching(page: str) -> str:
    return page.split('<p id="searching">', 1)[1].split("</p>", 1)[0]


def _upload(service: SearchService, index: int = 1) -> dict:
    path = Path(service.queries.paths[index])
    return {"query": (path.name, path.read_bytes(), "image/jpeg")}


def test_an_upload_is_kept_for_searching_again(client: TestClient, service: SearchService) -> None:
    """Issue: after an upload, ticking re-ranking and searching again gave "no query"."""
    first = client.post("/search", files=_upload(service), data={"topk": str(TOPK)})
    name = Path(service.queries.paths[1]).name
    assert first.status_code == 200 and _searching(first.text) == f"Searching: uploaded file {name}"
    form = FormState(first.text).values
    assert len(form["upload_id"]) == 64 and f"kept: {name}" in first.text
    again = {"source": "upload", "upload_id": form["upload_id"], "topk": str(TOPK), "rerank": "true"}
    second = client.post("/search", data=again)  # what the browser sends: the file field is empty now
    assert second.status_code == 200 and _searching(second.text) == f"Searching: uploaded file {name}"
    assert second.text.count('class="gallery-image"') == TOPK and FormState(second.text).values["rerank"] is True
    kept = client.post("/api/search", data=again).json()
    fresh = client.post("/api/search", files=_upload(service), data={"topk": str(TOPK), "rerank": "true"}).json()
    assert kept["results"] == fresh["results"] and kept["query"]["upload_id"] == form["upload_id"]


@pytest.mark.parametrize("sent, shown", [("photo.jpg", "photo.jpg"), ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
                                          ("../../etc/passwd", "passwd"), ("", "upload"),
                                          ("x" * 300 + ".png", "x" * 117 + "...")])
def test_an_upload_is_named_by_its_file_name_alone(sent: str, shown: str) -> None:
    from igoas.deploy.serve.uploads import upload_name

    assert upload_name(sent) == shown


def test_kept_uploads_are_bounded_and_their_ids_name_nothing_on_disk(service: SearchService) -> None:
    from igoas.deploy.serve.uploads import KeptUploads

    kept = KeptUploads(count=2, max_bytes=10)
    ids = [kept.keep(f"{n}.png", bytes([n]) * 4) for n in range(3)]
    assert kept.held() == (2, 8) and kept.get(ids[2]).name == "2.png"
    with pytest.raises(UploadError, match="no longer kept .* 2 latest uploads.*upload the image again") as gone:
        kept.get(ids[0])
    assert gone.value.status == 410
    kept.keep("big.png", b"x" * 7)
    assert kept.held() == (1, 7), "the byte bound drops the oldest"
    client = TestClient(create_app(service, kept=KeptUploads()))
    for upload_id, status, words in (("../../../etc/passwd", 400, "is not an upload id"),
                                     ("0" * 64, 410, "no longer kept")):
        page = client.post("/search", data={"source": "upload", "upload_id": upload_id})
        assert page.status_code == status and words in page.text


def test_without_a_query_list_the_kept_upload_is_searched_again(service: SearchService) -> None:
    client = TestClient(create_app(SearchService(service.model, service.gallery)))
    page = client.get("/")
    assert 'name="source"' not in page.text and 'class="picker"' not in page.text, "an upload is the only query"
    first = client.post("/search", files=_upload(service), data={"topk": "2"})
    again = client.post("/search", data={"upload_id": FormState(first.text).values["upload_id"], "topk": "3"})
    assert again.status_code == 200 and again.text.count('class="gallery-image"') == 3
    assert _searching(again.text) == f"Searching: uploaded file {Path(service.queries.paths[1]).name}"


@pytest.mark.parametrize("topk, status, words", [("0", 400, "top-K must be between"),
                                                 ("many", 422, "invalid form field(s): topk")])
def test_an_error_page_keeps_every_field(client: TestClient, service: SearchService, topk: str, status: int,
                                         words: str) -> None:
    """Issue: an error page reset occlusion, area, position and re-ranking."""
    sent = {"source": "list", "query_index": "2", "topk": topk, "occlude": "true", "area": "40",
            "position": "left", "rerank": "true"}
    page = client.post("/search", data=sent)
    assert page.status_code == status and words in page.text
    form = FormState(page.text).values
    assert form == {**form, "source": "list", "query_index": "2", "occlude": True, "area": "40.0" if topk == "0"
                    else "40", "position": "left", "rerank": True}
    after_upload = client.post("/search", files=_upload(service), data={**sent, "source": "upload"})
    assert after_upload.status_code == status and FormState(after_upload.text).values["source"] == "upload"
    if status == 400:  # the upload was read before the bad field was found: it is kept for the next try
        assert f"kept: {Path(service.queries.paths[1]).name}" in after_upload.text


def test_the_query_searched_is_the_one_the_form_names(client: TestClient, service: SearchService) -> None:
    """Issue: an upload silently won over a query selected in the list."""
    name = Path(service.queries.paths[3]).name
    listed = client.post("/search", files=_upload(service), data={"source": "list", "query_index": "3"})
    assert _searching(listed.text) == f"Searching: query {name} (number 3 of the list)"
    assert f"id {service.queries.pids[3]} &middot;" in listed.text, "the list query, with its identity"
    uploaded = client.post("/search", files=_upload(service), data={"source": "upload", "query_index": "3"})
    assert _searching(uploaded.text) == f"Searching: uploaded file {Path(service.queries.paths[1]).name}"
    both = client.post("/api/search", files=_upload(service), data={"query_index": "3"})
    assert both.status_code == 400 and "both an uploaded image and query number 3" in both.json()["error"]
    assert "source must be one of upload, list" in client.post("/api/search", data={"source": "x"}).json()["error"]
    chosen = client.post("/api/search", data={"query_index": "3"}).json()["query"]
    assert chosen == {"source": "list", "searching": f"query {name} (number 3 of the list)", "upload_id": None,
                      "query_index": 3}


@pytest.mark.parametrize("files, data, status, words", [
    ({"query": ("notes.jpg", b"hello, not a picture", "image/jpeg")}, {}, 400, "notes.jpg: not an image file"),
    ({"query": ("bomb.png", _bomb_png(), "image/png")}, {}, 413, "decompression bomb"),
    (None, {"query_index": "9999"}, 400, "no query number 9999"),
    (None, {}, 400, "no query: upload an image"),
    (None, {"query_index": "0", "topk": "0"}, 400, "top-K must be between"),
    (None, {"query_index": "0", "position": "middle"}, 400, "unknown occlusion position"),
    (None, {"query_index": "zero"}, 422, "query_index"),
], ids=["not-an-image", "bomb", "bad-choice", "no-query", "bad-topk", "bad-position", "bad-field"])
def test_bad_requests_get_an_error_page_and_the_server_carries_on(client: TestClient, files: dict | None,
                                                                  data: dict, status: int, words: str) -> None:
    page = client.post("/search", files=files, data=data)
    assert page.status_code == status and 'id="error"' in page.text and words in page.text
    assert words in client.post("/api/search", files=files, data=data).json()["error"]
    assert client.get("/").status_code == 200


def test_oversized_upload_is_refused(service: SearchService) -> None:
    small = TestClient(create_app(service, max_upload_bytes=1024))
    page = small.post("/search", files={"query": ("big.png", _png(200, 400), "image/png")})
    assert page.status_code == 413 and "the 1 kB limit" in page.text and "0 MB" not in page.text
    huge = small.post("/search", files={"query": ("huge.bin", b"\0" * 200_000, "image/png")})
    assert huge.status_code == 413 and "uploads are limited" in huge.text


def test_a_chunked_upload_is_stopped_at_the_limit(service: SearchService) -> None:
    """A chunked request has no Content-Length: the body is counted as it is read, and the
    read stops at the limit rather than spooling the rest to disk."""
    import asyncio

    from igoas.deploy.serve.app import REQUEST_OVERHEAD

    app = create_app(service, max_upload_bytes=1024)
    head = (b'--XyZ\r\nContent-Disposition: form-data; name="query"; filename="big.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    chunks = [head] + [b"\0" * 8192] * 64 + [b"\r\n--XyZ--\r\n"]
    pulled, sent = [], []

    async def receive() -> dict:
        pulled.append(len(pulled))
        if len(pulled) > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[len(pulled) - 1], "more_body": len(pulled) < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/search", "raw_path": b"/search", "query_string": b"", "root_path": "", "client": ("t", 1),
             "server": ("t", 80), "headers": [(b"content-type", b"multipart/form-data; boundary=XyZ"),
                                               (b"transfer-encoding", b"chunked")]}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and b"uploads are limited to 1 kB" in b"".join(m.get("body", b"") for m in sent)
    assert len(pulled) <= (1024 + REQUEST_OVERHEAD) // 8192 + 2 < len(chunks), "the rest of the body was not read"


def test_an_internal_failure_is_a_500_page_not_a_crash(service: SearchService, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    client = TestClient(create_app(service), raise_server_exceptions=False)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated fault in /secret/path")

    monkeypatch.setattr(service, "search", broken)
    with caplog.at_level("ERROR", logger="igoas.deploy.serve"):
        page = client.post("/search", data={"query_index": "0"})
    assert page.status_code == 500 and "internal error" in page.text and "still running" in page.text
    assert "simulated fault" not in page.text and "RuntimeError" not in page.text, "no internals on the page"
    assert "simulated fault in /secret/path" in caplog.text, "the details are in the server's log"
    monkeypatch.undo()
    assert client.post("/api/search", data={"query_index": "0", "topk": "2"}).status_code == 200


def test_service_from_python_with_a_tensor_query(service: SearchService) -> None:
    image = torch.rand(3, 128, 64)
    outcome = service.search(image, topk=3, occlusion=Occlusion(20.0, "left"))
    assert len(outcome.hits) == 3 and outcome.query_image.startswith("data:image/png;base64,")
    assert set(outcome.query_maps) == {"global", "suppression"}


def test_cli_reports_a_missing_gallery(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from igoas.cli import main

    assert main(["serve", str(tiny_checkpoint), "--gallery", str(tmp_path / "nowhere")]) == 2
    assert "no such gallery" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a real browser
def _chromium() -> str | None:
    return os.environ.get("IGOAS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def live_server(service: SearchService):
    """The app served by uvicorn on a free localhost port, in a thread of this process."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 30 s"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser_page(live_server: str):
    """The system's headless Chromium (Debian package `chromium`; nothing is downloaded) open at the server."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    if executable is None:
        message = "no chromium binary on PATH (Debian: apt-get install chromium; or set IGOAS_CHROMIUM)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 620})
            page.goto(live_server)
            yield page
        finally:
            browser.close()


@pytest.mark.slow
def test_page_in_headless_chromium(browser_page: object, service: SearchService) -> None:
    """Pick a query by its thumbnail, submit; K result images render, each with its distance.

    IGOAS_SERVE_SCREENSHOT=PATH also saves a screenshot of the answer page there.
    """
    page = browser_page
    thumbnails = page.locator(".picker img")
    assert thumbnails.count() == len(service.queries.paths)
    page.check("input[name=query_index][value='0']")
    assert page.is_checked("input[name=source][value=list]"), "picking a thumbnail chooses the list"
    page.fill("input[name=topk]", str(TOPK))
    page.check("input[name=occlude]")
    page.click("#search")
    page.wait_for_selector("#results", timeout=60_000)
    assert page.inner_text("#searching").startswith(f"Searching: query {Path(service.queries.paths[0]).name}")
    images = page.locator("img.gallery-image")
    assert images.count() == TOPK
    rendered = images.evaluate_all("items => items.map(i => i.complete && i.naturalWidth > 0)")
    assert rendered == [True] * TOPK
    shown = page.locator(".picker img").evaluate_all("items => items.filter(i => i.complete && i.naturalWidth > 0)"
                                                      ".length")
    assert shown >= 1, "the thumbnails in view are loaded"
    distances = [float(text) for text in page.locator(".result .distance .value").all_inner_texts()]
    assert len(distances) == TOPK and distances == sorted(distances)
    if os.environ.get("IGOAS_SERVE_SCREENSHOT"):
        page.screenshot(path=os.environ["IGOAS_SERVE_SCREENSHOT"], full_page=True)


@pytest.mark.slow
def test_an_upload_searched_again_with_reranking_in_headless_chromium(browser_page: object,
                                                                      service: SearchService) -> None:
    """Upload after picking a list query: the upload is searched; tick re-ranking and search again: still the upload."""
    page = browser_page
    name = Path(service.queries.paths[2]).name
    page.check("input[name=query_index][value='0']")
    page.set_input_files("input[name=query]", service.queries.paths[2])
    assert page.is_checked("input[name=source][value=upload]"), "the file chosen last is the query"
    page.fill("input[name=topk]", str(TOPK))
    page.click("#search")
    page.wait_for_selector("#results", timeout=60_000)
    assert page.inner_text("#searching") == f"Searching: uploaded file {name}"
    page.check("input[name=rerank]")
    page.click("#search")
    page.wait_for_selector("#results", timeout=60_000)
    assert page.inner_text("#searching") == f"Searching: uploaded file {name}"
    assert page.locator("img.gallery-image").count() == TOPK and page.is_checked("input[name=rerank]")
