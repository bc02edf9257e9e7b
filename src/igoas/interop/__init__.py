"""Exchange of weights with other code bases: the authors' torchreid checkpoints."""
from igoas.interop.official import KEY_CORRESPONDENCE, export_official, import_official

__all__ = ["KEY_CORRESPONDENCE", "export_official", "import_official"]
