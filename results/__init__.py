"""Measurement store (SQLAlchemy; SQLite by default) and markdown/PNG reports."""
