"""Progress of a batch run: a tqdm bar (rows/s, ETA) on a terminal when tqdm is installed, else one line every
`interval` seconds, so logs of long jobs show they are alive without a line per batch."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO


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
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=total, initial=done, unit="rows", unit_scale=True, file=self.stream, smoothing=0.1
                )
            except ImportError:
                self._bar = None

    def __call__(self, rows: int) -> None:
        with self._lock:
            if self._first is None:  # the rate counts from the first answer, not from the server's start
                self._first = (time.monotonic(), self.count)
            self.count += rows
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
        t0, c0 = self._first or (self.started, self._start_count)
        elapsed = max(time.monotonic() - t0, 1e-9)
        rate = (self.count - c0) / elapsed
        left = self.total - self.count
        eta = f"{left / rate:,.0f} s" if rate > 0 else "?"
        pct = 100.0 * self.count / self.total if self.total else 100.0
        return f"  {self.count:,}/{self.total:,} rows ({pct:.0f}%), {rate:,.0f} rows/s, ETA {eta}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
