"""The FastAPI application: one server-rendered page and a JSON endpoint over a `SearchService`.

Routes: `GET /` the search form; `POST /search` the form's answer (the same page with
the ranked gallery); `POST /api/search` the ranking as JSON, without pictures;
`GET /queries/{n}/thumbnail.png` the picker's thumbnail of query number n. Every
refusal (not an image, too large, a bomb, a bad field) and every unexpected failure
becomes an error page or JSON error with a status code; the process never stops serving.

The page keeps its state: an upload is kept server-side (`KeptUploads`) and the page
sends back its id, so searching again needs no new upload; an error page is the form as
it was sent; and the form says which query to search (`source`: the upload or the list,
set by the page to the one the user touched last), never guessing between the two.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from igoas.data.base import camera_name
from igoas.deploy.serve.render import thumbnail_png
from igoas.deploy.serve.search import Occlusion, SearchOutcome, SearchService, occlusion_positions
from igoas.deploy.serve.uploads import MAX_UPLOAD_BYTES, KeptUploads, UploadError, decode_upload, size_text, upload_name
from igoas.utils.errors import IgoasError

TEMPLATES = Path(__file__).parent / "templates"
DEFAULT_TOPK = 10
MAX_TOPK = 50
# Form fields and multipart framing around the file: a request body this much larger than
# the upload limit is refused.
REQUEST_OVERHEAD = 64 * 1024
# Uploads decoded at once: each may hold up to MAX_PIXELS of RGB (75 MB), and the endpoints
# run in a thread pool of dozens, so decoding waits for one of these.
DECODE_SLOTS = 2
THUMBNAIL_HEIGHT = 64  # pixels; the picker shows them at half that
# Where the query comes from: the uploaded file (new, or kept by its upload_id), or the query list.
SOURCES = ("upload", "list")
# What the form holds before the first search.
DEFAULT_FORM: dict[str, Any] = {"source": "", "upload_id": "", "query_index": -1, "topk": DEFAULT_TOPK,
                                "occlude": False, "area": Occlusion.area, "position": Occlusion.position,
                                "rerank": False}
CHECKBOXES = ("occlude", "rerank")
TRUE_WORDS = ("1", "on", "t", "true", "y", "yes")  # what FastAPI reads as a true bool
LOG = logging.getLogger("igoas.deploy.serve")


@dataclass
class SearchForm:
    """The fields of the search form (and of the JSON endpoint), as one dependency."""

    query: UploadFile | None = File(None)
    source: str = Form(DEFAULT_FORM["source"])
    upload_id: str = Form(DEFAULT_FORM["upload_id"])
    query_index: int = Form(DEFAULT_FORM["query_index"])
    topk: int = Form(DEFAULT_FORM["topk"])
    occlude: bool = Form(DEFAULT_FORM["occlude"])
    area: float = Form(DEFAULT_FORM["area"])
    position: str = Form(DEFAULT_FORM["position"])
    rerank: bool = Form(DEFAULT_FORM["rerank"])

    def fields(self) -> dict[str, Any]:
        """The form's values other than the upload, to fill the form in again on the answer page."""
        return {name: getattr(self, name) for name in DEFAULT_FORM}

    def new_file(self) -> bool:
        """Whether a file was chosen in the upload field (a browser sends an empty one otherwise)."""
        return self.query is not None and bool(self.query.filename)


def submitted_fields(body: Any) -> dict[str, Any]:
    """The form's fields as sent, from a request whose fields did not all parse, to fill the form in again.

    Values that parse are used as such; others are shown as typed (a number field that
    was not a number comes back empty), so no field the user set is reset by the error.
    """
    if body is None or not hasattr(body, "get"):
        return {}
    form: dict[str, Any] = {}
    for name in DEFAULT_FORM:
        value = body.get(name)
        if isinstance(value, str):
            form[name] = value
    for name in CHECKBOXES:
        form[name] = str(form.get(name, "")).strip().lower() in TRUE_WORDS
    index = str(form.get("query_index", "")).strip()
    form["query_index"] = int(index) if index.lstrip("-").isdigit() else DEFAULT_FORM["query_index"]
    return form


def query_source(form: SearchForm) -> str:
    """Which query to search: the form's `source`, or for a client that names none, the only kind it sent."""
    if form.source:
        if form.source not in SOURCES:
            raise UploadError(f"source must be one of {', '.join(SOURCES)}, got {form.source!r}")
        return form.source
    uploaded, listed = form.new_file() or bool(form.upload_id), form.query_index >= 0
    if uploaded and listed:
        raise UploadError(f"both an uploaded image and query number {form.query_index} of the list were sent; "
                          "say which to search: tick \"uploaded image\" or \"from the query split\" "
                          "(source=upload or source=list)")
    if not (uploaded or listed):
        raise UploadError("no query: upload an image or choose one from the query list")
    return "upload" if uploaded else "list"


class BodyLimit:
    """Pure ASGI wrapper refusing (413) a request whose body passes `limit` bytes.

    The received bytes are counted as the app reads them, so a chunked request (which has
    no Content-Length) is stopped at the limit instead of being spooled to disk whole; a
    declared Content-Length over the limit is refused before any of the body is read. The
    refusal is an HTTPException raised from `receive`, which the app's handler turns into
    the usual error page or JSON.
    """

    def __init__(self, app: Any, limit: int, shown_limit: int) -> None:
        self.app, self.limit, self.shown_limit = app, limit, shown_limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"").decode("latin-1")
        received = 0

        async def counted() -> dict:
            nonlocal received
            if declared.isdigit() and int(declared) > self.limit:
                raise HTTPException(413, f"the request is {int(declared):,} bytes; uploads are limited to "
                                         f"{size_text(self.shown_limit)}")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, f"the request passed {received:,} bytes; uploads are limited to "
                                             f"{size_text(self.shown_limit)}")
            return message

        await self.app(scope, counted, send)


def create_app(service: SearchService, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               kept: KeptUploads | None = None) -> Any:
    """The web app serving `service`; run it with uvicorn (see `igoas serve`) or test it with TestClient.

    `kept` holds the uploads for searching again (default: a new `KeptUploads`).
    """
    app = FastAPI(title="igoas gallery search", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["camera"] = camera_name  # c1, c2, ... as the dataset's file names write them
    query_names = [Path(p).name for p in service.queries.paths] if service.queries else []
    page_context = {"about": service.describe(), "positions": occlusion_positions(), "max_topk": MAX_TOPK,
                    "query_names": query_names}
    kept = kept if kept is not None else KeptUploads()

    def page(request: Request, status: int = 200, **values: Any) -> HTMLResponse:
        form = {**DEFAULT_FORM, **getattr(request.state, "form", {})}
        kept_name = kept.name(form["upload_id"]) if form["upload_id"] else None
        return templates.TemplateResponse(request, "page.html",
                                          {**page_context, "form": form, "kept_name": kept_name, **values},
                                          status_code=status)

    def refusal(request: Request, status: int, message: str) -> HTMLResponse | JSONResponse:
        if request.url.path.startswith(("/api/", "/queries/")):
            return JSONResponse({"error": message}, status_code=status)
        return page(request, status=status, error=message)

    app.add_middleware(BodyLimit, limit=max_upload_bytes + REQUEST_OVERHEAD, shown_limit=max_upload_bytes)
    decoding = threading.BoundedSemaphore(DECODE_SLOTS)

    @app.exception_handler(IgoasError)
    async def user_error(request: Request, err: IgoasError) -> Any:
        return refusal(request, getattr(err, "status", 400), str(err))

    @app.exception_handler(RequestValidationError)
    async def bad_field(request: Request, err: RequestValidationError) -> Any:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in err.errors())
        request.state.form = submitted_fields(err.body)
        return refusal(request, 422, f"invalid form field(s): {fields}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Any:
        return refusal(request, err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def failure(request: Request, err: Exception) -> Any:
        # The details (which may name files or internals) go to the server's log only; messages
        # written for users come as IgoasError and are shown by `user_error` above.
        LOG.error("search failed: %s %s", request.method, request.url.path, exc_info=err)
        return refusal(request, 500, "the search failed with an internal error (the details are in the server's "
                                     "log); the server is still running")

    def decode(data: bytes, name: str) -> Any:
        with decoding:
            return decode_upload(data, name, max_upload_bytes)

    def uploaded_query(form: SearchForm, state: dict[str, Any]) -> tuple[Any, str]:
        """The upload's pixels and name: a new file (kept from now on, its id in `state`), or the kept one."""
        if form.new_file():
            name, data = upload_name(form.query.filename), form.query.file.read(max_upload_bytes + 1)
            image = decode(data, name)
            state["upload_id"] = kept.keep(name, data)
            return image, name
        if not form.upload_id:
            raise UploadError("no uploaded image to search: choose an image file, or a query from the list")
        upload = kept.get(form.upload_id)
        return decode(upload.data, upload.name), upload.name

    def run_search(form: SearchForm, state: dict[str, Any]) -> tuple[SearchOutcome, str]:
        """The outcome of the search the form asks for, and how the page names its query.

        `state` is the form as the answer shows it: the source searched and the kept upload's
        id are written into it as soon as they are known, so an error page keeps them too.
        """
        source = query_source(form)
        state["source"] = source
        if source == "upload":
            image, name = uploaded_query(form, state)
        else:
            path, pid, camid = service.query_choice(form.query_index)
        if not 1 <= form.topk <= MAX_TOPK:
            raise UploadError(f"top-K must be between 1 and {MAX_TOPK}, got {form.topk}")
        if form.position not in occlusion_positions():
            raise UploadError(f"unknown occlusion position {form.position!r}; choose one of {occlusion_positions()}")
        if not 0.0 <= form.area <= 100.0:
            raise UploadError(f"occluded area must be a percentage in [0, 100], got {form.area}")
        occlusion = Occlusion(form.area, form.position) if form.occlude else None
        if source == "upload":
            return service.search(image, form.topk, occlusion=occlusion, rerank=form.rerank), f"uploaded file {name}"
        outcome = service.search(path, form.topk, pid, camid, occlusion, form.rerank, query_index=form.query_index)
        return outcome, f"query {query_names[form.query_index]} (number {form.query_index} of the list)"

    def answer(request: Request, form: SearchForm) -> tuple[SearchOutcome, str]:
        """Run the search, with the form kept on the request for the answer or the error page."""
        request.state.form = form.fields()
        return run_search(form, request.state.form)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        return page(request)

    @app.post("/search", response_class=HTMLResponse)
    def search_page(request: Request, form: SearchForm = Depends()) -> HTMLResponse:
        outcome, searching = answer(request, form)
        return page(request, outcome=outcome, searching=searching)

    @app.post("/api/search")
    def search_json(request: Request, form: SearchForm = Depends()) -> dict[str, Any]:
        outcome, searching = answer(request, form)
        state = request.state.form
        return {"query": {"source": state["source"], "searching": searching,
                          "upload_id": state["upload_id"] if state["source"] == "upload" else None,
                          "query_index": form.query_index if state["source"] == "list" else None},
                "pid": outcome.pid, "camid": outcome.camid, "rerank": outcome.rerank, "metric": outcome.metric,
                "unoccluded_depth": outcome.unoccluded_depth if outcome.occlusion is not None else None,
                "occlusion": None if outcome.occlusion is None else asdict(outcome.occlusion),
                "results": [{key: value for key, value in asdict(hit).items() if key not in ("image", "maps")}
                            for hit in outcome.hits]}

    @app.get("/queries/{index}/thumbnail.png")
    def thumbnail(index: int) -> Response:
        try:
            path, _, _ = service.query_choice(index)
        except IgoasError as err:
            raise HTTPException(404, str(err)) from None
        return Response(thumbnail_png(path, THUMBNAIL_HEIGHT), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    return app
