"""Maintenance after a run that committed: compaction of the table it wrote, when due."""

from __future__ import annotations

import logging

from agent.config import LoadedConfig
from connectors.lake import DeltaLake
from connectors.lake_maintenance import Compaction, compact_if_due

log = logging.getLogger("silta.lake")


def maintain(loaded: LoadedConfig, lake: DeltaLake, table: str, agent: str
             ) -> Compaction | None:
    """Compact ``table`` if it has gathered enough small files. Never raises: the run's
    commit stands either way, and the next run tries again."""
    try:
        opened = lake.open(table)
        if opened is None:
            return None
        return compact_if_due(opened, min_files=loaded.config.agent.compact_min_files,
                              by=agent)
    except Exception as e:  # maintenance only speeds reading up
        log.warning("maintenance of %s skipped (tried again after the next commit): %s",
                    table, e)
        return None
