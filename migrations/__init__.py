"""Alembic environment and versions for the outbound schema (`outbound migrate` runs them)."""
