"""The package version, in one place (the CLI, provenance records and exports read it)."""
__version__ = "0.1.0"
