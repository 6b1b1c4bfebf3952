"""Keep what start-up built out of the garbage collector's full collections (the loop's pauses).

A serving process holds ~300 000 objects made at start-up and kept until it exits: modules,
the flow, the prompt catalog, pinyin and division tables, the settings. CPython's full (oldest
generation) collection walks every tracked object with the event loop stopped, 50-300 ms on the
benchmark machine, and calls create enough long-lived objects (sessions, dialogs, transactions)
to trigger one every few hundred calls: a send-clock stall every caller hears as a gap. Frozen
objects (``gc.freeze``) are never walked again, so a full collection only looks at what calls
made since; everything calls allocate is still collected as before.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then freeze every surviving object; returns how many are frozen now.

    Call it once, when start-up is over and before calls arrive. Garbage is collected first so
    it is not kept for the life of the process.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
