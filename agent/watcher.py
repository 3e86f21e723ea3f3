"""File-arrival triggers from watchdog, for syncs with ``watch = true``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from connectors.names import is_temporary

log = logging.getLogger("silta.watch")


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, notify: Callable[[], None]) -> None:
        self.root = root
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write", "deleted"):
            return
        path = event.dest_path or event.src_path
        path = path.decode() if isinstance(path, bytes) else path
        try:
            rel = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return
        if event.is_directory or not is_temporary(rel):
            # A new folder may hold files that raised no event of their own: a run rescans.
            self.notify()


class FolderWatcher:
    """One watchdog observer; each watched folder calls its ``notify`` on changes."""

    def __init__(self) -> None:
        self._observer = Observer()
        self._count = 0

    def watch(self, root: Path, notify: Callable[[], None]) -> None:
        if not root.is_dir():
            log.warning("not watching %s: the folder does not exist (the schedule and the "
                        "periodic rescan still find files once it does)", root)
            return
        self._observer.schedule(_Handler(root, notify), str(root), recursive=True)
        self._count += 1
        log.info("watching %s", root)

    def start(self) -> None:
        if self._count:
            self._observer.start()

    def stop(self) -> None:
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=5)
