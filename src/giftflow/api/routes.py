"""The economy's endpoints beyond the core contract of SPEC.md §8.1.

Users, two-factor, KYC, receipts, refunds, payouts review, limits, teams, admin, reports and
provider webhooks.

``ROUTES`` lists the handlers; ``create_app`` registers them with the core ones.
"""

from __future__ import annotations

from typing import Any

ROUTES: list[Any] = []
"""Route handlers added to the application."""
