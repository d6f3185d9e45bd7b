"""The EGFR decision-support DICOM node."""

from importlib import metadata

try:
    __version__ = metadata.version("cdss-node")
except metadata.PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "unknown"
