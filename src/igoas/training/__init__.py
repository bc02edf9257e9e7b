"""Training: the loop, its optimiser and schedule, DataParallel replicas, exact resume and the run log."""
from igoas.training.trainer import TrainingDiverged, TrainResult, train

__all__ = ["TrainResult", "TrainingDiverged", "train"]
