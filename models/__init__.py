"""Persistence: typed models, engines, the repository the workers call, and reporting.

Importing this package loads nothing heavy; import the submodule you need
(`models.dial_fields` validates dial requests without SQLAlchemy).
"""
