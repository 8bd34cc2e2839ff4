"""The mailbox's on-disk format: one 4 KiB slot per host, in two areas of the master domain.

``dom_md/outbox`` holds each host's requests in its own slot (only that host writes it);
``dom_md/inbox`` holds the SPM's replies to each host in that host's slot (only the SPM writes
it, through its writer). Slot ``h`` is at offset ``(h - 1) * 4096``. A slot is written whole,
with a CRC32 over everything but the CRC: a torn write (a 4 KiB write is 8 sectors on a 512 B
device) or a foreign one fails the check and is read again at the next poll, never trusted.
An all-zero slot is empty. See docs/mailbox.md for the byte layout.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field

SLOT = 4096
MAGIC = b"VMB1"
VERSION = 1
REQUESTS, REPLIES = 1, 2
MAX_MESSAGES = 31
MESSAGE = 128
HEADER = struct.Struct("<4sHHIIQQ28x")  # magic version kind host count written epoch
CRC_AT = 60
MESSAGES_AT = 64
MSG = struct.Struct("<BBHiQ16s16s16sQQ48s")
EXTEND = 1
DONE, FAILED = 0, 1


class SlotError(ValueError):
    """A slot that fails its check (torn, foreign or garbage): read it again later."""


@dataclass(frozen=True)
class Message:
    seq: int  # unique per requesting host
    sd_uuid: str
    img_uuid: str
    vol_uuid: str
    size: int  # request: the size wanted; reply: the size reached
    op: int = EXTEND
    status: int = DONE  # replies only
    code: int = 0  # replies: the error code when FAILED
    latency_us: int = 0  # replies: how long the SPM took to serve it
    text: str = ""  # replies: the error message when FAILED (truncated)

    def encode(self) -> bytes:
        text = self.text.encode("utf-8", "replace")[:48]
        return MSG.pack(self.op, self.status, 0, self.code, self.seq,
                        uuid.UUID(self.sd_uuid).bytes, uuid.UUID(self.img_uuid).bytes,
                        uuid.UUID(self.vol_uuid).bytes, self.size, self.latency_us, text)

    @classmethod
    def decode(cls, raw: bytes) -> Message:
        op, status, _pad, code, seq, sd, img, vol, size, latency, text = MSG.unpack(raw)
        if op != EXTEND:
            raise SlotError(f"unknown mailbox operation {op}")
        return cls(seq, str(uuid.UUID(bytes=sd)), str(uuid.UUID(bytes=img)),
                   str(uuid.UUID(bytes=vol)), size, op, status, code, latency,
                   text.rstrip(b"\0").decode("utf-8", "replace"))

    def to_wire(self) -> dict[str, object]:
        return {"seq": self.seq, "sdUUID": self.sd_uuid, "imgUUID": self.img_uuid,
                "volUUID": self.vol_uuid, "size": self.size, "status": self.status,
                "code": self.code, "latencyUs": self.latency_us, "text": self.text}

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> Message:
        return cls(int(str(data["seq"])), str(data["sdUUID"]), str(data["imgUUID"]),
                   str(data["volUUID"]), int(str(data["size"])), EXTEND,
                   int(str(data.get("status", DONE))), int(str(data.get("code", 0))),
                   int(str(data.get("latencyUs", 0))), str(data.get("text", "")))

    @property
    def volume(self) -> tuple[str, str, str]:
        return self.sd_uuid, self.img_uuid, self.vol_uuid

    def reply(self, *, size: int, latency_us: int, code: int = 0, text: str = "") -> Message:
        return Message(self.seq, self.sd_uuid, self.img_uuid, self.vol_uuid, size,
                       self.op, FAILED if code else DONE, code, latency_us, text)


@dataclass(frozen=True)
class Slot:
    host_id: int
    kind: int
    messages: tuple[Message, ...] = field(default_factory=tuple)
    epoch: int = 0
    written_ns: int = 0

    def encode(self) -> bytes:
        if len(self.messages) > MAX_MESSAGES:
            raise ValueError(f"a slot holds at most {MAX_MESSAGES} messages")
        data = bytearray(SLOT)
        HEADER.pack_into(data, 0, MAGIC, VERSION, self.kind, self.host_id,
                         len(self.messages), self.written_ns, self.epoch)
        for i, message in enumerate(self.messages):
            data[MESSAGES_AT + i * MESSAGE:MESSAGES_AT + i * MESSAGE + MSG.size] = \
                message.encode()
        struct.pack_into("<I", data, CRC_AT, _crc(data))
        return bytes(data)

    @classmethod
    def decode(cls, raw: bytes, *, host_id: int, kind: int) -> Slot | None:
        """The slot, or None when it was never written; SlotError when it fails a check."""
        if len(raw) != SLOT:
            raise SlotError(f"a slot is {SLOT} bytes, not {len(raw)}")
        if not any(raw):
            return None
        magic, version, got_kind, got_host, count, written, epoch = HEADER.unpack_from(raw)
        if magic != MAGIC or version != VERSION:
            raise SlotError(f"slot {host_id}: not a mailbox slot (magic {magic!r})")
        if struct.unpack_from("<I", raw, CRC_AT)[0] != _crc(raw):
            raise SlotError(f"slot {host_id}: checksum mismatch (torn or foreign write)")
        if got_kind != kind or got_host != host_id or count > MAX_MESSAGES:
            raise SlotError(f"slot {host_id}: says host {got_host}, kind {got_kind}, "
                            f"{count} messages")
        messages = tuple(
            Message.decode(raw[MESSAGES_AT + i * MESSAGE:MESSAGES_AT + i * MESSAGE + MSG.size])
            for i in range(count))
        return cls(host_id, kind, messages, epoch, written)


def _crc(data: bytes | bytearray) -> int:
    view = memoryview(data)
    return zlib.crc32(view[MESSAGES_AT:], zlib.crc32(view[:CRC_AT])) & 0xFFFFFFFF
