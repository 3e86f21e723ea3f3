"""Silta's agent: config, state store, sync engine, scheduler, service and CLI.

Never imports textual or the ``tui`` package.
"""

from __future__ import annotations

import os

# Arrow's default allocator (mimalloc) is 2-4x slower on these machines (SERVICES.md); the
# choice must be made before pyarrow is first imported, which any agent module does.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
