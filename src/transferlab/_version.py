"""The package version (one place: the root package, the CLI and every run record read it)."""

__version__ = "0.1.0"
