"""The progress bar the client draws on stderr while the daemon works (only
when stderr is a terminal and --json is off)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ProgressBar:
    """A rich progress bar on stderr, made at the first progress line (rich
    is imported only then: plain runs and pipes never pay for it). rich
    honours NO_COLOR."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None
        self._files: dict[str, Any] = {}

    def update(self, message: str, done: int, total: int, files: Any = None) -> None:
        """The overall bar; with `files` ([[name, done, size], ...], install
        by name), one bar per file below it."""
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(message, total=total or None)
        self._progress.update(self._task, description=message, completed=done, total=total or None)
        for name, file_done, size in files if isinstance(files, list) else []:
            task = self._files.get(name)
            if task is None:
                task = self._files[name] = self._progress.add_task(f"  {name}", total=size or None)
            self._progress.update(task, completed=file_done, total=size or None)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
