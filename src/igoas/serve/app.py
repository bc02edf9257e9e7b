"""The FastAPI application: one server-rendered page and a JSON endpoint over a `SearchService`.

Routes: `GET /` the search form; `POST /search` the form's answer (the same page with
the ranked gallery); `POST /api/search` the ranking as JSON, without pictures. Every
refusal (not an image, too large, a bomb, a bad field) and every unexpected failure
becomes an error page or JSON error with a status code; the process never stops serving.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from igoas.data.base import camera_name
from igoas.errors import IgoasError
from igoas.serve.search import Occlusion, SearchOutcome, SearchService, occlusion_positions
from igoas.serve.uploads import MAX_UPLOAD_BYTES, UploadError, decode_upload, size_text

TEMPLATES = Path(__file__).parent / "templates"
DEFAULT_TOPK = 10
MAX_TOPK = 50
# Form fields and multipart framing around the file: a request body this much larger than
# the upload limit is refused.
REQUEST_OVERHEAD = 64 * 1024
# Uploads decoded at once: each may hold up to MAX_PIXELS of RGB (75 MB), and the endpoints
# run in a thread pool of dozens, so decoding waits for one of these.
DECODE_SLOTS = 2
# What the form holds before the first search.
DEFAULT_FORM: dict[str, Any] = {"query_index": -1, "topk": DEFAULT_TOPK, "occlude": False, "area": Occlusion.area,
                                "position": Occlusion.position, "rerank": False}
LOG = logging.getLogger("igoas.serve")


@dataclass
class SearchForm:
    """The fields of the search form (and of the JSON endpoint), as one dependency."""

    query: UploadFile | None = File(None)
    query_index: int = Form(DEFAULT_FORM["query_index"])
    topk: int = Form(DEFAULT_FORM["topk"])
    occlude: bool = Form(DEFAULT_FORM["occlude"])
    area: float = Form(DEFAULT_FORM["area"])
    position: str = Form(DEFAULT_FORM["position"])
    rerank: bool = Form(DEFAULT_FORM["rerank"])

    def fields(self) -> dict[str, Any]:
        """The form's values other than the upload, to fill the form in again on the answer page."""
        return {name: getattr(self, name) for name in DEFAULT_FORM}


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


def create_app(service: SearchService, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Any:
    """The web app serving `service`; run it with uvicorn (see `igoas serve`) or test it with TestClient."""
    app = FastAPI(title="igoas gallery search", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["camera"] = camera_name  # c1, c2, ... as the dataset's file names write them
    page_context = {"about": service.describe(), "positions": occlusion_positions(), "max_topk": MAX_TOPK,
                    "query_names": [Path(p).name for p in service.queries.paths] if service.queries else []}

    def page(request: Request, status: int = 200, **values: Any) -> HTMLResponse:
        form = {**DEFAULT_FORM, **values.pop("form", {})}
        return templates.TemplateResponse(request, "page.html", {**page_context, "form": form, **values},
                                          status_code=status)

    def refusal(request: Request, status: int, message: str) -> HTMLResponse | JSONResponse:
        if request.url.path.startswith("/api/"):
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

    def run_search(form: SearchForm) -> SearchOutcome:
        if not 1 <= form.topk <= MAX_TOPK:
            raise UploadError(f"top-K must be between 1 and {MAX_TOPK}, got {form.topk}")
        if form.position not in occlusion_positions():
            raise UploadError(f"unknown occlusion position {form.position!r}; choose one of {occlusion_positions()}")
        if not 0.0 <= form.area <= 100.0:
            raise UploadError(f"occluded area must be a percentage in [0, 100], got {form.area}")
        occlusion = Occlusion(form.area, form.position) if form.occlude else None
        upload = form.query
        if upload is not None and upload.filename:
            with decoding:
                image = decode_upload(upload.file.read(max_upload_bytes + 1), upload.filename, max_upload_bytes)
            return service.search(image, form.topk, occlusion=occlusion, rerank=form.rerank)
        if form.query_index < 0:
            raise UploadError("no query: upload an image or choose one from the query list")
        path, pid, camid = service.query_choice(form.query_index)
        return service.search(path, form.topk, pid, camid, occlusion, form.rerank, query_index=form.query_index)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        return page(request)

    @app.post("/search", response_class=HTMLResponse)
    def search_page(request: Request, form: SearchForm = Depends()) -> HTMLResponse:
        return page(request, outcome=run_search(form), form=form.fields())

    @app.post("/api/search")
    def search_json(form: SearchForm = Depends()) -> dict[str, Any]:
        outcome = run_search(form)
        return {"pid": outcome.pid, "camid": outcome.camid, "rerank": outcome.rerank, "metric": outcome.metric,
                "unoccluded_depth": outcome.unoccluded_depth if outcome.occlusion is not None else None,
                "occlusion": None if outcome.occlusion is None else asdict(outcome.occlusion),
                "results": [{key: value for key, value in asdict(hit).items() if key not in ("image", "maps")}
                            for hit in outcome.hits]}

    return app
