"""The nwcache command line."""
