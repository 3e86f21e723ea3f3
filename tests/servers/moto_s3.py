"""Placeholder: the moto_s3 server fixture is being written."""

from __future__ import annotations
