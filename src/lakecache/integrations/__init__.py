"""Data access for training code: the engine behind ``lakecache.torch`` and the fsspec protocol.

Layering: this package sits beside ``flows/`` and ``tracking/`` (DESIGN.md's
``library/`` row) and uses ``data/`` and ``cache/`` below it; nothing below
imports it. torch and fsspec are imported only by the modules that need them
(:mod:`lakecache.torch`, :mod:`lakecache.fsspec`), never here.
"""
