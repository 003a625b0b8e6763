"""Caches: one commit materialised as plain files on a cache volume at a site.

Fill (staging, verified, published by one rename), lease (a heartbeat keeps a
cache in use), evict (planned by a pure function, then executed).
"""
