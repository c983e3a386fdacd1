"""Process-level settings the tick depends on: BLAS threads and the garbage collector.

Why on purpose: the engine runs its own scan threads, each calling BLAS on one block; a multi-threaded BLAS
inside them oversubscribes the cores (2 engine threads x 2 BLAS threads on 2 cores). And a full garbage
collection over a big heap inside a tick costs ~100 ms and more (README, "Facts we rely on"), so long-lived objects
are frozen after warm-up and collection is paused while a tick runs.
"""

from __future__ import annotations

import gc
from typing import Any

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries numpy loaded and their thread counts (for logs and benchmark reports)."""
    return [
        {"api": i.get("internal_api"), "version": i.get("version"), "threads": i.get("num_threads")}
        for i in _control().info()
        if i.get("user_api") == "blas"
    ]


def _control() -> ThreadpoolController:
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


def set_blas_threads(n: int) -> None:
    """Set the BLAS thread count for the whole process (lasts until changed again)."""
    _control().limit(limits=n, user_api="blas")


def freeze_heap() -> None:
    """Collect once, then move every live object to the permanent generation: later collections skip them."""
    gc.collect()
    gc.freeze()
