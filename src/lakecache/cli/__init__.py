"""The command line: ``lakecache``. Imports stay lazy so every command starts fast."""
