"""`igoas serve`: a local web page to search a gallery with a query image and see why it ranks as it does.

`build_service` loads the model, the gallery and the optional query list (no web
framework involved); `igoas.deploy.serve.app.create_app` wraps a service in the FastAPI app,
imported only when the page is served (the `serve` extra).
"""
from igoas.deploy.serve.gallery import Ranking, load_gallery, rank
from igoas.deploy.serve.search import Hit, Occlusion, SearchOutcome, SearchService, build_service
from igoas.deploy.serve.uploads import UploadError, decode_upload

__all__ = [
    "Hit",
    "Occlusion",
    "Ranking",
    "SearchOutcome",
    "SearchService",
    "UploadError",
    "build_service",
    "decode_upload",
    "load_gallery",
    "rank",
]
