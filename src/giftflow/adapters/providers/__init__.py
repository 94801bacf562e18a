"""Payment and payout provider adapters: each turns a provider's wire format into economy values."""
