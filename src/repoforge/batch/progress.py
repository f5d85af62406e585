"""Progress of a batch run: a tqdm bar (rows/s, ETA) on a terminal when tqdm is installed, else one line every
`interval` seconds, so logs of long jobs show they are alive without a line per batch."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from repoforge import lazy


class Progress:
    def __init__(
        self, total: int, done: int = 0, *, stream: TextIO | None = None, interval: float = 10.0, enabled: bool = True
    ) -> None:
        self.total = total
        self.count = done
        self._start_count = done
        self.stream = stream or sys.stderr
        self.interval = interval
        self.enabled = enabled
        self.started = time.monotonic()
        self._last = self.started
        self._lock = threading.Lock()
        self._bar: Any = None
        self._first: tuple[float, int] | None = None
        self._make_bar()

    def _make_bar(self) -> None:
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                self._bar = lazy.tqdm().tqdm(
                    total=self.total, initial=self.count, unit="rows", unit_scale=True, file=self.stream, smoothing=0.1
                )
            except ImportError:
                self._bar = None

    def retarget(self, stream: TextIO) -> TextIO:
        """Write to `stream` from now on (the Ray engine sends what else goes to stderr to a log file); returns the
        stream written to before."""
        with self._lock:
            old = self.stream
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self.stream = stream
            self._make_bar()
            return old

    def __call__(self, rows: int) -> None:
        with self._lock:
            self.count += rows
            if self._first is None:  # the rate counts from the first answer, not from the server's start
                self._first = (time.monotonic(), self.count)
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.update(rows)
                return
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self.stream.write(self.line() + "\n")
                self.stream.flush()

    def line(self) -> str:
        # The rows of the first answer came at one instant (Ray hands back whole blocks after its start), so they
        # are the rate's time base, not part of it; until a second answer the rate is the average since the start.
        t0, c0 = self._first if self._first is not None and self.count > self._first[1] else (
            self.started, self._start_count)  # fmt: skip
        elapsed = max(time.monotonic() - t0, 1e-3)
        rate = (self.count - c0) / elapsed
        left = self.total - self.count
        eta = f"{left / rate:,.0f} s" if rate > 0 else "?"
        pct = 100.0 * self.count / self.total if self.total else 100.0
        return f"  {self.count:,}/{self.total:,} rows ({pct:.0f}%), {rate:,.0f} rows/s, ETA {eta}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
