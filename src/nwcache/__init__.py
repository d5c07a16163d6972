"""nwcache: Wheel 2.0 archives, a content-addressed package store and a FUSE view."""

__version__ = "0.1.0"
