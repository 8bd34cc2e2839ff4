"""Where the files a client names may be: one policy for every VM verb.

A client names files by path in ``VM.create`` (``vmParams.drives[].path``, ``kernel``,
``initrd``, ``restoreState``), in ``VM.changeCD``/``VM.changeFloppy`` (``path``) and in
``VM.hibernate`` (``hiberVolHandle``). The agent runs as root and hands these paths to
libvirt, which opens them as root, and to the hooks (in the domain XML). Unchecked, a client
could have a guest read ``/etc/shadow``, write over the agent's own state, or have a memory
image overwrite any file. :class:`PathPolicy` decides, the same way at create, at a media
change and at a restore:

- a **drive image** (disk, CD-ROM, floppy) must be an existing regular file or block device
  in one of ``[vm] image_dirs``;
- a **kernel** or **initrd** must be an existing regular file in one of ``[vm] image_dirs``;
- a **memory image** that ``VM.hibernate`` writes must be a new name in ``[vm]
  hibernation_dir`` (agent-owned, mode 0700): it must not exist, and the agent creates it
  with ``O_CREAT|O_EXCL`` and mode 0600 before libvirt writes into it, so nothing is ever
  overwritten and the guest's memory is never readable by others;
- a **memory image** that ``restoreState`` reads must be an existing regular file in
  ``[vm] hibernation_dir`` (the restore consumes it: removed once the VM runs again).

Every path is resolved (symlinks, ``..``) before it is checked and the *resolved* path is
what libvirt gets: a symlink that leads out of an allowed directory is refused, and one
swapped after the check cannot redirect libvirt. Nothing may lie in the agent's own
directories (state, run, hooks, serial logs; memory images only as memory images) or in
the system's (:data:`SYSTEM_DIRS`), even when an allowed directory contains them. Paths
with NUL, relative paths and over-long names are refused too. Every refusal is
:class:`~messaging.errors.InvalidParams` (-32602) naming the param.

Storage handles need no path at all and are preferred: drives named by
pool/domain/image/volume, and memory images named by a volume handle
``sdUUID,spUUID,imgUUID,volUUID`` (vdsm's form of ``hiberVolHandle``), are prepared by the
storage layer and are not checked here (a memory image never goes to a volume that is a
drive of a VM of this host: :meth:`~actors.vm.ops.VmOps.hibernate`).

The checks stat the filesystem: call them off the actor threads (the API workers do).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from actors.vm.params import ROOT, MemoryImage, VmParams, memory_image
from messaging.errors import InvalidParams, NoSpace, StorageError

#: Never a client's file, whatever ``image_dirs`` says.
SYSTEM_DIRS = (Path("/etc"), Path("/proc"), Path("/sys"), Path("/run"), Path("/var/log"),
               Path("/var/lib/libvirt/qemu"))
NAME_MAX = 255
PATH_MAX = 4095
MEMORY_IMAGE_MODE = 0o600
SHOWN = 120  # characters of a refused path quoted in the error


@dataclass(frozen=True)
class PathPolicy:
    """``image_dirs``: where images and boot files may be; ``hibernation_dir``: where memory
    images are; ``private``: the agent's own directories (never a client's file)."""

    image_dirs: tuple[Path, ...]
    hibernation_dir: Path
    private: tuple[Path, ...]

    @classmethod
    def build(cls, *, image_dirs: Sequence[Path], hibernation_dir: Path,
              private: Sequence[Path]) -> PathPolicy:
        if hibernation_dir in private or any(p.is_relative_to(hibernation_dir)
                                             for p in private):
            raise ValueError(f"hibernation_dir {hibernation_dir} must be a directory of its "
                             "own, not one of the agent's other directories or above them")
        return cls(tuple(image_dirs), hibernation_dir, tuple(private))

    def prepare(self) -> None:
        """Create the hibernation directory, agent-owned and closed to others (0700)."""
        self.hibernation_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.hibernation_dir, 0o700)

    # --- VM.create ---------------------------------------------------------------------------

    def check_params(self, params: VmParams) -> VmParams:
        """``params`` with every path a client named resolved and checked."""
        kernel = initrd = None
        if params.kernel is not None:
            kernel = self.boot_file(params.kernel, f"{ROOT}.kernel")
        if params.initrd is not None:
            initrd = self.boot_file(params.initrd, f"{ROOT}.initrd")
        if isinstance(params.restore_state, str):
            restore: MemoryImage | None = self.memory_image(params.restore_state,
                                                            f"{ROOT}.restoreState")
        else:
            restore = params.restore_state  # a volume, or none
        drives = []
        writers: dict[str, int] = {}
        for drive in params.drives:
            if not drive.path:  # a volume (prepared by storage) or no media
                drives.append(drive)
                continue
            where = f"{ROOT}.drives[{drive.index}].path"
            path = self.drive_image(drive.path, where)
            if drive.device == "disk" and not drive.readonly:
                if path in writers:
                    raise InvalidParams(where, f"the same file as drives[{writers[path]}]")
                writers[path] = drive.index
            drives.append(replace(drive, path=path))
        return replace(params, kernel=kernel, initrd=initrd, restore_state=restore,
                       drives=tuple(drives))

    # --- one path ---------------------------------------------------------------------------

    def drive_image(self, text: str, where: str) -> str:
        """A disk, CD-ROM or floppy image (a regular file or a block device)."""
        path = self._resolve(text, where)
        self._inside(path, self.image_dirs, text, where, "image_dirs")
        self._of_type(path, where, text, block=True)
        return str(path)

    def media(self, text: str, where: str = "path") -> str:
        """What VM.changeCD / VM.changeFloppy may insert ("" ejects)."""
        return self.drive_image(text, where) if text else ""

    def boot_file(self, text: str, where: str) -> str:
        """A kernel or an initrd (a regular file)."""
        path = self._resolve(text, where)
        self._inside(path, self.image_dirs, text, where, "image_dirs")
        self._of_type(path, where, text, block=False)
        return str(path)

    def memory_image(self, text: str, where: str) -> str:
        """A memory image to restore from (a regular file in the hibernation directory)."""
        path = self._resolve(text, where)
        self._inside(path, (self.hibernation_dir,), text, where, "hibernation_dir")
        self._of_type(path, where, text, block=False)
        return str(path)

    def hibernation_target(self, text: str, where: str = "hiberVolHandle") -> MemoryImage:
        """Where VM.hibernate writes: a volume (prepared by storage) or a new file."""
        target = memory_image(text, where)
        return target if not isinstance(target, str) else self.new_memory_image(target, where)

    def new_memory_image(self, text: str, where: str) -> str:
        """Where VM.hibernate may write a memory image: a name that does not exist yet in
        the hibernation directory. :func:`create_memory_image` makes it, atomically."""
        _syntax(text, where)
        parent_text, name = os.path.split(text)
        if name in ("", ".", "..") or len(name.encode()) > NAME_MAX:
            raise InvalidParams(where, f"{_shown(text)} does not end in a valid file name")
        parent = self._resolve(parent_text, where)
        self._inside(parent, (self.hibernation_dir,), text, where, "hibernation_dir",
                     itself=True)
        target = parent / name
        if os.path.lexists(target):
            raise InvalidParams(where, f"{_shown(text)} exists already: a memory image is "
                                       "never written over an existing file")
        return str(target)

    # --- helpers ----------------------------------------------------------------------------

    def _resolve(self, text: str, where: str) -> Path:
        _syntax(text, where)
        try:
            return Path(os.path.realpath(text, strict=True))
        except FileNotFoundError:
            raise InvalidParams(where, f"{_shown(text)} does not exist") from None
        except (OSError, RuntimeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise InvalidParams(where, f"{_shown(text)}: {reason}") from None

    def _inside(self, path: Path, allowed: Sequence[Path], text: str, where: str,
                setting: str, *, itself: bool = False) -> None:
        roots = [Path(os.path.realpath(d)) for d in allowed]
        if not any(path.is_relative_to(r) and (itself or path != r) for r in roots):
            shown = ", ".join(str(d) for d in allowed) or "nothing"
            raise InvalidParams(where, f"{_shown(text)} is not in [vm] {setting} ({shown})")
        if allowed == (self.hibernation_dir,):  # a memory image: the state dir holds them
            hibernation = Path(os.path.realpath(self.hibernation_dir))
            private = [d for d in self.private
                       if not hibernation.is_relative_to(os.path.realpath(d))]
        else:
            private = [*SYSTEM_DIRS, *self.private, self.hibernation_dir]
        for directory in private:
            if path.is_relative_to(os.path.realpath(directory)):
                raise InvalidParams(where, f"{_shown(text)} is in {directory}, which is "
                                           "not a client's to name")

    @staticmethod
    def _of_type(path: Path, where: str, text: str, *, block: bool) -> None:
        try:
            mode = path.stat().st_mode
        except OSError as e:
            raise InvalidParams(where, f"{_shown(text)}: {e.strerror}") from None
        if stat.S_ISREG(mode) or (block and stat.S_ISBLK(mode)):
            return
        wanted = "a regular file or a block device" if block else "a regular file"
        raise InvalidParams(where, f"{_shown(text)} is {_kind(mode)}, not {wanted}")


def create_memory_image(path: str, where: str = "hiberVolHandle") -> None:
    """Create the empty memory image ``path`` (checked by :meth:`PathPolicy.new_memory_image`)
    with mode 0600, failing if anything exists there meanwhile (a file or a symlink)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, MEMORY_IMAGE_MODE)
    except FileExistsError:
        raise InvalidParams(where, f"{_shown(path)} exists already: a memory image is never "
                                   "written over an existing file") from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise NoSpace(where=str(Path(path).parent),
                          reason=f"cannot create {_shown(path)}") from None
        raise StorageError(reason=f"cannot create {_shown(path)}: {e.strerror}") from None
    try:
        os.fchmod(fd, MEMORY_IMAGE_MODE)  # whatever the umask
    finally:
        os.close(fd)


def _syntax(text: str, where: str) -> None:
    if "\0" in text:
        raise InvalidParams(where, "a path cannot contain NUL")
    if not text.startswith("/"):
        raise InvalidParams(where, f"{_shown(text)} is not an absolute path")
    if len(text.encode()) > PATH_MAX:
        raise InvalidParams(where, f"a path of {len(text.encode())} bytes is too long")


def _shown(text: str) -> str:
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"
