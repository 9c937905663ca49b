"""Fixtures shared by the whole suite (each area's fixtures live in their own module)."""

pytest_plugins = ["tests.db_fixtures"]
