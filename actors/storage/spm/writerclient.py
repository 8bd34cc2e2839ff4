"""vdsmd's side of the writer: one call per request, abandoned when the lease is lost.

A call opens a DEALER socket to the writer the board names (one socket per call: sockets are
not thread-safe, and callers are the pool's writer thread, task workers and the mail
monitor), sends one request, and waits for its reply in short slices. Between slices it reads
the board: when this host stops being SPM with that writer (the keeper fenced it, or it was
released), the call ends at once with :class:`NotSPM`, whether or not the writer got to do
the work (the next SPM recovers a task; an extension is simply asked again).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import zmq

from actors.storage.spm.board import LeaseBoard
from messaging import codec
from messaging.errors import NotSPM, StorageTimeout, error_from_wire

SLICE = 0.2
_ids = itertools.count(1)


class WriterClient:
    def __init__(self, *, board: LeaseBoard, sp_uuid: str, context: zmq.Context[Any]) -> None:
        self.board = board
        self.sp_uuid = sp_uuid
        self.context = context

    def call(self, method: str, params: dict[str, Any], *, timeout: float) -> Any:
        state = self.board.get(self.sp_uuid)
        if not state.may_write():
            raise NotSPM(spUUID=self.sp_uuid, data={"reason": state.reason})
        lver = state.lver
        request_id = next(_ids)
        sock: zmq.Socket[bytes] = self.context.socket(zmq.DEALER)
        sock.linger = 0
        try:
            sock.connect(state.writer_endpoint)
            sock.send_multipart([b"", codec.encode(
                {"id": request_id, "method": method, "params": params})])
            deadline = time.monotonic() + timeout
            while True:
                if sock.poll(int(SLICE * 1000)):
                    reply = codec.decode(sock.recv_multipart()[-1], codec.Limits(1 << 30))
                    if not isinstance(reply, dict) or reply.get("id") != request_id:
                        continue
                    if "error" in reply:
                        raise error_from_wire(reply["error"])
                    return reply.get("result")
                now = self.board.get(self.sp_uuid)
                if now.status != "SPM" or now.lver != lver:
                    raise NotSPM(spUUID=self.sp_uuid, data={
                        "reason": f"the SPM lease (lver {lver}) was lost during {method}: "
                                  f"{now.reason}"})
                if time.monotonic() >= deadline:
                    raise StorageTimeout(timeout=timeout, reason=f"{method} on the writer")
        finally:
            sock.close(linger=0)
