"""Reading and writing mailbox slots with O_DIRECT, each I/O bounded by ``io_timeout``.

One :class:`MailArea` per area file per user thread (a SectorFile serves one thread): the HSM
side writes its outbox slot and reads its inbox slot; the SPM side reads the first ``hosts``
outbox slots in one read and writes inbox slots (in its writer process).
"""

from __future__ import annotations

import os
from pathlib import Path

from actors.storage.lease import aligned
from actors.storage.lease.sectorfile import SectorFile
from actors.storage.mailbox.format import SLOT, Slot, SlotError


class MailArea:
    def __init__(self, path: str | Path, *, kind: int, slots: int, io_timeout: float,
                 write: bool, sector_size: int = 512) -> None:
        self.kind = kind
        self.slots = slots
        self._file = SectorFile(path, sector_size=sector_size, span=SLOT * slots,
                                io_timeout=io_timeout, write=write, name=f"{path}")

    def read_slot(self, host_id: int) -> Slot | None:
        raw = self._file.read((host_id - 1) * SLOT, SLOT).value
        return Slot.decode(raw, host_id=host_id, kind=self.kind)

    def read_raw(self) -> bytes:
        """All ``slots`` slots in one read (the SPM's poll)."""
        return self._file.read(0, SLOT * self.slots).value

    def decode(self, raw: bytes, host_id: int) -> Slot | None:
        """Slot ``host_id`` out of :meth:`read_raw`'s bytes (SlotError when it fails a check)."""
        start = (host_id - 1) * SLOT
        return Slot.decode(raw[start:start + SLOT], host_id=host_id, kind=self.kind)

    def write_slot(self, slot: Slot) -> None:
        if slot.kind != self.kind:
            raise SlotError(f"a kind {slot.kind} slot in a kind {self.kind} area")
        self._file.write((slot.host_id - 1) * SLOT, slot.encode())

    def close(self) -> None:
        self._file.close()


class OutboxPoller:
    """The SPM's poll of every outbox slot: one O_DIRECT read on the caller's own thread.

    Only the mail server's dedicated thread uses it, 20 times a second: a handoff to an I/O
    thread per poll (as :class:`MailArea` does, for callers that must not hang) would cost
    more than the read. A read stuck on hung storage holds that thread only, which serves
    nothing else; when the storage answers again the thread goes on."""

    def __init__(self, path: str | Path, *, slots: int) -> None:
        self.path = str(path)
        self.slots = slots
        self._buf = aligned.AlignedBuffer(SLOT * slots)
        self._fd: int | None = None

    def read_raw(self, count: int | None = None) -> bytes:
        """The first ``count`` slots (all of them by default)."""
        count = self.slots if count is None else min(count, self.slots)
        if self._fd is None:
            self._fd = aligned.open_direct(self.path, write=False)
        try:
            return aligned.read_at(self._fd, self._buf, 0, SLOT * count)
        except OSError:
            self.close_fd()
            raise

    def close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        self.close_fd()
        self._buf.close()
