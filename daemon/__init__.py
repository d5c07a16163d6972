"""The nwcache daemon: store, view and socket server (see docs/ARCHITECTURE.md)."""
