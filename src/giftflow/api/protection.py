"""What protects the service and tells how it is doing.

Request ids, rate limits, structured logs, metrics and health.

``MIDDLEWARE`` and ``ROUTES`` are added to the application by ``create_app``.
"""

from __future__ import annotations

from typing import Any

MIDDLEWARE: list[Any] = []
"""ASGI middleware, outermost first."""

ROUTES: list[Any] = []
"""Route handlers (metrics, readiness)."""
