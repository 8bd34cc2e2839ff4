"""What each kind of task does, rebuilt from its persisted params: run it, or undo it.

A task's work is built from its verb and JSON params alone, so that a restarted vdsmd can
rebuild it and undo what an interrupted run started. Everything here blocks on storage and
runs on the task manager's worker threads.

- ``Volume.create``: the backend's creation steps (see steps.py). ``revert(started)`` undoes
  the first ``started`` steps; after a restart it first kills a ``qemu-img`` the dead vdsmd
  left writing the volume, and removes the image directory the creation made if it is empty.
- ``StorageDomain.attach`` / ``detach``: one step each, whose undo is the opposite; the
  metadata writes themselves are done by the pool actor (the pool's single writer).
- ``Volume.delete`` / ``Image.delete``: a deletion cannot be undone; "reverting" an
  interrupted one finishes it (rolls forward), so nothing half-deleted remains either. It
  holds the image's lock (:mod:`actors.storage.usage`) from its check that nothing is
  prepared or in use until the deletion is done, so a prepare cannot slip in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from actors.storage import fileutil, leftovers
from actors.storage.command import Aborter
from actors.storage.guard import UNGUARDED, WriteGuard, guarded_steps
from actors.storage.locator import DomainLocator
from actors.storage.sd.filedomain import FileDomain
from actors.storage.sd.records import VolumeCreateRequest, check_uuid
from actors.storage.steps import Journal, Progress, Step, revert_steps, run_steps
from actors.storage.usage import VolumeUsage, check_unused
from messaging.errors import NoSuchImage, NoSuchVolume, StorageError

log = logging.getLogger(__name__)

PoolCall = Callable[[str, str, str], None]
"""``(spUUID, "attach"|"detach", sdUUID)``: have the pool actor do it; blocks (bounded)."""


class Work(Protocol):
    def run(self, abort: Aborter, journal: Journal) -> None:
        """Do the work; on failure leave nothing behind (undo what was started)."""
        ...

    def revert(self, started: int) -> None:
        """Undo the first ``started`` steps (idempotent); StorageError if an undo failed."""
        ...


@dataclass(frozen=True)
class TaskEnv:
    locator: DomainLocator
    pool_call: PoolCall
    usage: VolumeUsage
    guard: WriteGuard = UNGUARDED  # the SPM writer's fence guard (see guard.py)


class _StepsWork:
    env: TaskEnv

    def steps(self) -> list[Step]:
        raise NotImplementedError

    def run(self, abort: Aborter, journal: Journal) -> None:
        run_steps(guarded_steps(self.steps(), self.env.guard), abort=abort, journal=journal)

    def revert(self, started: int) -> None:
        if started <= 0:
            return
        failures = revert_steps(guarded_steps(self.steps(), self.env.guard), started)
        if failures:
            raise StorageError(reason="undo failed: " + "; ".join(str(f) for f in failures))


class CreateVolume(_StepsWork):
    def __init__(self, env: TaskEnv, params: Mapping[str, Any]) -> None:
        self.env = env
        self.request = VolumeCreateRequest.from_json(dict(params["request"]))

    def steps(self) -> list[Step]:
        backend = self.env.locator.open(self.request.sd_uuid)
        return backend.volume_create_steps(self.request)

    def revert(self, started: int) -> None:
        if started <= 0:
            return
        req = self.request
        backend = self.env.locator.open(req.sd_uuid)
        if isinstance(backend, FileDomain):
            leftovers.kill_holders(backend.layout.volume(req.img_uuid, req.vol_uuid))
        super().revert(started)
        if isinstance(backend, FileDomain):
            image = backend.layout.image(req.img_uuid)
            if image.is_dir() and not any(image.iterdir()):
                fileutil.rmdir(image)


class _OneStep(_StepsWork):
    def __init__(self, env: TaskEnv, params: Mapping[str, Any]) -> None:
        self.env = env
        self.sp_uuid = check_uuid(params["spUUID"], "storagepoolID")
        self.sd_uuid = check_uuid(params["sdUUID"], "storagedomainID")

    def _call(self, action: str) -> None:
        self.env.pool_call(self.sp_uuid, action, self.sd_uuid)


class Attach(_OneStep):
    def steps(self) -> list[Step]:
        return [Step("attach", lambda _abort: self._call("attach"),
                     lambda: self._call("detach"))]


class Detach(_OneStep):
    def steps(self) -> list[Step]:
        return [Step("detach", lambda _abort: self._call("detach"),
                     lambda: self._call("attach"))]


class _Deletion:
    """Deleting cannot be undone: reverting an interrupted deletion finishes it."""

    name = "delete"

    def __init__(self, env: TaskEnv, params: Mapping[str, Any]) -> None:
        self.env = env
        self.sd_uuid = check_uuid(params["sdUUID"], "storagedomainID")
        self.img_uuid = check_uuid(params["imgUUID"], "imageID")

    def delete(self) -> None:
        raise NotImplementedError

    def run(self, abort: Aborter, journal: Journal) -> None:
        abort.check()
        journal(Progress(1, 1, 0, self.name))
        with self.env.guard.write(f"{self.name} {self.img_uuid}"):
            self.delete()
        journal(Progress(1, 1, 1, self.name))

    def revert(self, started: int) -> None:
        if started <= 0:
            return
        try:
            with self.env.guard.write(f"finish {self.name} {self.img_uuid}"):
                self.delete()
        except (NoSuchImage, NoSuchVolume):
            pass  # already gone: finished


class DeleteVolume(_Deletion):
    def __init__(self, env: TaskEnv, params: Mapping[str, Any]) -> None:
        super().__init__(env, params)
        self.vol_uuid = check_uuid(params["volUUID"], "volumeID")

    def delete(self) -> None:
        backend = self.env.locator.open(self.sd_uuid)
        with self.env.usage.image_lock(self.sd_uuid, self.img_uuid, "delete"):
            check_unused(self.env.usage, backend, self.img_uuid, self.vol_uuid)
            backend.delete_volume(self.img_uuid, self.vol_uuid)


class DeleteImage(_Deletion):
    def delete(self) -> None:
        backend = self.env.locator.open(self.sd_uuid)
        with self.env.usage.image_lock(self.sd_uuid, self.img_uuid, "delete"):
            check_unused(self.env.usage, backend, self.img_uuid, None)  # NoSuchImage if gone
            backend.delete_image(self.img_uuid)


Builder = Callable[[Mapping[str, Any]], Work]


def builders(env: TaskEnv) -> dict[str, Builder]:
    """The task kinds by verb, each building its work from the persisted params."""
    kinds: dict[str, Callable[[TaskEnv, Mapping[str, Any]], Work]] = {
        "Volume.create": CreateVolume,
        "Volume.delete": DeleteVolume,
        "Image.delete": DeleteImage,
        "StorageDomain.attach": Attach,
        "StorageDomain.detach": Detach,
    }

    def builder(kind: Callable[[TaskEnv, Mapping[str, Any]], Work]) -> Builder:
        return lambda params: kind(env, params)

    return {verb: builder(kind) for verb, kind in kinds.items()}
