"""Storage: every path, file format, schema and fingerprint of the project lives here."""

from storage.fs import Location
from storage.layout import OutputLayout
from storage.manifest import StageManifest, read_manifest, write_manifest

__all__ = ["Location", "OutputLayout", "StageManifest", "read_manifest", "write_manifest"]
