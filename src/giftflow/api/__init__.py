"""The HTTP service: the ASGI application over the domains (an adapter at the edge)."""
