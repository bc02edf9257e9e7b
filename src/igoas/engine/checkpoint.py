"""Kept so that `igoas.engine.checkpoint` imports keep working: the format lives in `igoas.artifacts.checkpoint`."""
from igoas.artifacts.checkpoint import (FORMAT_NAME, FORMAT_VERSION, checkpoint_payload, load_checkpoint,  # noqa: F401
                                        load_model_state, model_from_checkpoint, read_torch_file, save_checkpoint)
