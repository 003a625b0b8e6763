"""The API's routers, one module per concept, mounted by :func:`lakecache.server.create_app`."""
