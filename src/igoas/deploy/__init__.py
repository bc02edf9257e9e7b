"""Putting a trained model to work: `ReIDModel` and its back ends, export to ONNX and
TorchScript, feature extraction, and the `serve` search page."""
