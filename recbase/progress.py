"""Progress on long work: a tqdm bar redrawn in place on a terminal; elsewhere (a log file, CI, a Ray
worker whose output the driver forwards) one plain line every ``EVERY_S`` seconds."""
from __future__ import annotations

import sys
import time
from typing import Callable

EVERY_S = 30.0


def interactive() -> bool:
    return sys.stderr.isatty()


class Progress:
    """``with Progress("[eval] scoring", total=n, unit="pairs") as p: p.update(k, loss=0.1)``."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "it", log: Callable[[str], None] = print,
                 every_s: float = EVERY_S) -> None:
        self.desc, self.total, self.unit, self.log, self.every_s = desc, total, unit, log, every_s
        self.done, self.t0 = 0, time.monotonic()
        self.last = self.t0
        self.bar = None
        if interactive():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)

    def update(self, n: int = 1, **postfix) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        of = f"/{self.total:,}" if self.total else ""
        extra = "".join(f", {k} {v}" for k, v in postfix.items())
        self.log(f"{self.desc}: {self.done:,}{of} {self.unit} ({now - self.t0:.0f} s{extra})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
