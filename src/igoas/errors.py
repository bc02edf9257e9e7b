"""Errors the CLI reports as one clear message instead of a traceback."""


class IgoasError(Exception):
    """A problem with the user's input (file, dataset, config) that they can fix."""


class DatasetError(IgoasError):
    """A dataset copy is missing, misnamed or malformed."""


class CheckpointError(IgoasError):
    """A checkpoint cannot be read, is unsafe, or does not match the model."""


class ConfigError(IgoasError):
    """A config file or override is invalid."""
