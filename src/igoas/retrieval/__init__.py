"""Gallery search: features files and a FAISS index over them (numpy in, numpy out)."""
from igoas.retrieval.features_file import Features, features_from_arrays, load_features, save_features
from igoas.retrieval.index import INDEX_KINDS, GalleryIndex, SearchResult

__all__ = [
    "Features",
    "GalleryIndex",
    "INDEX_KINDS",
    "SearchResult",
    "features_from_arrays",
    "load_features",
    "save_features",
]
