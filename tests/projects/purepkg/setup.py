# The executable script goes through setuptools' `scripts`, so that it lands in
# nwdemo_pure-0.1.0.data/scripts/ in the wheel with its exec bit; pyproject.toml
# has no stable field for that.
from setuptools import setup  # type: ignore[import-untyped]

setup(scripts=["scripts/nwdemo-pure-script"])
