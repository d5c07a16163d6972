"""nwdemo-pure: a tiny package used by the nwcache round-trip tests."""

__version__ = "0.1.0"
