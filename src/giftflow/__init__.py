"""giftflow: the live-gifting economy on an exact double-entry ledger."""

__version__ = "0.1.0"
