"""The version of scbranchdiff: the one place it is written (pyproject.toml reads it from here)."""

__version__ = "0.7.0"
