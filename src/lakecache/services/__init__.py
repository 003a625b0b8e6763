"""Launchers of the real services lakecache runs against, started on 127.0.0.1 on free ports.

SeaweedFS (an S3 lake), PostgreSQL (a team catalog), Podman images and a local
multi-node Ray cluster: ``make demo``, the test fixtures and ``make bench``
start them from here and stop them when done. Nothing in the product imports
this package.
"""
