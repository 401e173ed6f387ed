"""The release, for the package metadata, /openapi.json and the build_info metric."""

__version__ = "0.3.0"
