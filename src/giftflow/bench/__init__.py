"""Benchmarks run by `giftflow bench`; each prints its bare-SQL baseline from the same run."""
