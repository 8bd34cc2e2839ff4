"""Reading and writing mailbox slots with O_DIRECT, each I/O bounded by ``io_timeout``.

One :class:`MailArea` per area file per user thread (a SectorFile serves one thread): the HSM
side writes its outbox slot and reads its inbox slot; the SPM side reads the first ``hosts``
outbox slots in one read and writes inbox slots (in its writer process).
"""

from __future__ import annotations

from pathlib import Path

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
