"""The writer's guard: a metadata write starts only while this host holds the SPM lease.

Before each write, :class:`FenceGuard` reads the fence file the keeper maintains and refuses
(:class:`~messaging.errors.NotSPM`) unless it says SPM, with the writer's own lver, and the
deadline has not passed. With a journal, it also records the write's begin and end (see
:mod:`actors.storage.spm.journal`). The check and the write are not atomic: a writer stalled
between them can still land a write late. The keeper's kill at ``deadline`` bounds that while
the keeper runs (docs/spm.md says what remains).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from actors.storage.sd.stamp import stamping
from actors.storage.spm.fence import FenceReader
from actors.storage.spm.journal import Journal
from messaging.errors import NotSPM


class FenceGuard:
    def __init__(self, fence: FenceReader, *, sp_uuid: str, lver: int,
                 journal: Journal | None = None) -> None:
        self.fence = fence
        self.sp_uuid = sp_uuid
        self.lver = lver
        self.journal = journal
        self.writes = 0
        self.refused = 0

    @contextlib.contextmanager
    def write(self, what: str) -> Iterator[None]:
        fence = self.fence.read()
        if not fence.allows(self.lver):
            self.refused += 1
            raise NotSPM(spUUID=self.sp_uuid, data={
                "reason": f"the SPM lease (lver {self.lver}) is not held: {what} refused",
                "fence": fence.to_wire()})
        journal = self.journal
        seq = journal.next_seq() if journal else 0
        if journal is not None:
            journal.append({"ev": "begin", "seq": seq, "lver": self.lver,
                            "t": time.monotonic(), "deadline": fence.deadline_ns / 1e9,
                            "expiry": (fence.expiry_ns or fence.deadline_ns) / 1e9,
                            "what": what[:120]})
        self.writes += 1
        try:
            with stamping(self.lver):  # the metadata written now carries the lver
                yield
        finally:
            if journal is not None:
                journal.append({"ev": "end", "seq": seq, "t": time.monotonic()})
