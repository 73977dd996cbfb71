"""The one compiled module; everything else about the package is in pyproject.toml.

telemetry_lab/_kernels.c holds the inner loops of detection and statistics: plain C
against the buffer protocol, so building needs a C compiler and the Python headers only.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("telemetry_lab._kernels", ["telemetry_lab/_kernels.c"],
                             extra_compile_args=["-O3"])])
