"""Streaming text for :meth:`pydecode.LLM.stream`: token ids in (from a generate() streamer), text pieces out.

A piece holds whole UTF-8 characters only (text ending in an incomplete byte sequence waits for the next token), and a
tail that could still become a stop string is held back until the next tokens decide it; once a stop string appears,
the text before it is the last piece.
"""
from __future__ import annotations

import queue
import threading

import torch

_END = object()


class StopTextTracker:
    """The text decoded so far from a growing list of token ids, and how much of it may be shown."""

    def __init__(self, tokenizer, stops=()):
        self.tokenizer = tokenizer
        self.stops = [stop for stop in (stops or ()) if stop]
        self.ids: list[int] = []
        self.shown = 0
        self.stopped = False

    def add(self, ids: list[int]) -> str:
        """Append ``ids``; return the new text that is now safe to show ("" when none)."""
        if self.stopped:
            return ""
        self.ids.extend(ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = self._stop_position(text)
        if cut is not None:
            self.stopped = True
            return self._show(text[:cut])
        safe = len(text.rstrip("\ufffd"))  # an incomplete UTF-8 sequence decodes to U+FFFD: wait for its bytes
        safe -= self._held_back(text[:safe])
        return self._show(text[:safe])

    def finish(self) -> str:
        """The rest of the text once generation ended (no more tokens can complete a stop string)."""
        if self.stopped:
            return ""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = self._stop_position(text)
        self.stopped = True
        return self._show(text if cut is None else text[:cut])

    def _show(self, text: str) -> str:
        piece = text[self.shown:] if len(text) > self.shown else ""
        self.shown = max(self.shown, len(text))
        return piece

    def _stop_position(self, text: str) -> int | None:
        positions = [at for at in (text.find(stop) for stop in self.stops) if at != -1]
        return min(positions) if positions else None

    def _held_back(self, text: str) -> int:
        """The length of the longest tail of ``text`` that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


class QueueStreamer:
    """A generate() streamer (``put`` / ``end``) that hands the generated ids of its one row to another thread; the
    first ``put`` (the prompt) is skipped. ``cancelled`` set by the consumer ends the generation at the next step
    through :meth:`stopping_criterion`."""

    def __init__(self):
        self.items: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.items.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.items.put(_END)

    def fail(self, error: BaseException) -> None:
        self.items.put(error)

    def stopping_criterion(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

    def __iter__(self):
        while True:
            item = self.items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def stream_text(run, tokenizer, stops):
    """Yield the text pieces of ``run(streamer, criterion)`` (a generate() call made on a worker thread)."""
    streamer = QueueStreamer()
    tracker = StopTextTracker(tokenizer, stops)

    def work():
        try:
            run(streamer, streamer.stopping_criterion)
        except BaseException as error:  # handed to the consumer, raised there
            streamer.fail(error)
        else:
            streamer.end()

    worker = threading.Thread(target=work, name="pydecode-stream", daemon=True)
    worker.start()
    try:
        for ids in streamer:
            piece = tracker.add(ids)
            if piece:
                yield piece
            if tracker.stopped:
                break
        piece = tracker.finish()
        if piece:
            yield piece
    finally:
        streamer.cancelled.set()
        worker.join()
