"""The IGOAS network, its baseline, and `build_model`."""
from igoas.model.backbone import BACKBONES
from igoas.model.build import MODEL_BUILDERS, build_model
from igoas.model.network import IGOAS, IGOASOutput

__all__ = ["BACKBONES", "IGOAS", "IGOASOutput", "MODEL_BUILDERS", "build_model"]
