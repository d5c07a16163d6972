# The C extension is declared here: pyproject.toml has no field for ext_modules.
from setuptools import Extension, setup  # type: ignore[import-untyped]

setup(ext_modules=[Extension("nwdemo_ext._speedups", sources=["src/speedups.c"])])
