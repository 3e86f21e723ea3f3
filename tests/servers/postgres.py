"""Placeholder: the postgres server fixture is being written."""

from __future__ import annotations
