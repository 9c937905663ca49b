"""Choosing trunks for a dial: trunk groups and failover (docs/routing.md)."""
