"""Alembic scripts for the manyheads store (a package so wheels ship them)."""
