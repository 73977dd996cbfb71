"""telemetry-lab: analysis of industrial telemetry, one parquet file per site and window."""

from .analysis import analyse, analyse_file
from .errors import (DataError, ManifestError, ParamsError, ReportError, StorageError,
                     TelemetryLabError)
from .layout import Channel, Layout, default_layout
from .params import AnalysisParams

__version__ = "0.1.0"

__all__ = [
    "AnalysisParams", "analyse", "analyse_file", "Channel", "Layout", "default_layout",
    "TelemetryLabError", "DataError", "ManifestError", "ParamsError", "ReportError",
    "StorageError",
]
