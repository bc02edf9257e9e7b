"""Errors the CLI reports as one clear message instead of a traceback."""


class IgoasError(Exception):
    """A problem with the user's input (file, dataset, config) that they can fix."""


class DatasetError(IgoasError):
    """A dataset copy is missing, misnamed or malformed."""


class CheckpointError(IgoasError):
    """A checkpoint cannot be read, is unsafe, or does not match the model."""


class ConfigError(IgoasError):
    """A config file or override is invalid."""


def describe_os_error(err: OSError) -> str:
    """One line for a failed file operation: which path, what went wrong, what to do."""
    import errno

    where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None) or "a file"
    advice = {
        errno.ENOSPC: "disk full; free some space (files written before are kept as they were)",
        errno.EDQUOT: "disk quota exceeded; free some space (files written before are kept as they were)",
        errno.EACCES: "permission denied; make it readable/writable or choose another path",
        errno.EPERM: "operation not permitted; choose another path",
        errno.EROFS: "the file system is read-only; choose another output folder",
        errno.ENOTDIR: "a file stands where a folder is needed; choose another path or move the file",
        errno.EISDIR: "a folder stands where a file is needed; choose another path",
        errno.ENOENT: "no such file or folder",
    }.get(err.errno or -1, err.strerror or str(err))
    return f"{where}: {advice}"
