"""Items of an iterator produced ahead in a background thread (disk reads, host-to-device transfers)."""

from __future__ import annotations

import queue
import threading
from typing import Iterator


def prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
  """`iterator`'s items, produced up to `depth` ahead in a thread while the consumer works on the
  current one (an exception in the thread is raised in the consumer; closing the generator stops
  the thread)."""
  q: queue.Queue = queue.Queue(maxsize=depth)
  done, stop = object(), threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def worker():
    try:
      for item in iterator:
        if not put(item):
          return  # the consumer went away
      put(done)
    except BaseException as e:  # surfaced in the consumer
      put(e)

  threading.Thread(target=worker, daemon=True).start()
  try:
    while True:
      item = q.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
