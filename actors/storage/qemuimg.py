"""qemu-img: create, info, resize, check and measure images; JSON output parsed into records.

Every function runs one ``qemu-img`` command through :func:`actors.storage.command.run` with a
timeout and an optional :class:`~actors.storage.command.Aborter`. A failure that says the
disk is full becomes :class:`NoSpace`; other failures are :class:`StorageCommandError`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from actors.storage.command import Aborter, run
from messaging.errors import NoSpace, StorageCommandError, StorageError

log = logging.getLogger(__name__)

QEMU_IMG = "qemu-img"
Format = Literal["qcow2", "raw"]
Preallocation = Literal["off", "metadata", "falloc", "full"]

INFO_TIMEOUT = 30.0
CREATE_TIMEOUT = 60.0
"""For metadata-only work; a ``full`` preallocation needs a timeout scaled to its size."""

_CHECK_OK = 0
_CHECK_CORRUPT = 2
_CHECK_LEAKS = 3
_CHECK_UNSUPPORTED = 63


@dataclass(frozen=True)
class ImageInfo:
    filename: str
    format: str
    virtual_size: int
    actual_size: int
    backing_filename: str | None = None
    full_backing_filename: str | None = None
    backing_format: str | None = None
    cluster_size: int | None = None
    compat: str | None = None
    corrupt: bool = False
    dirty: bool = False


@dataclass(frozen=True)
class CheckResult:
    filename: str
    format: str
    corruptions: int
    leaks: int
    check_errors: int
    image_end_offset: int | None

    @property
    def ok(self) -> bool:
        return self.corruptions == 0 and self.check_errors == 0


@dataclass(frozen=True)
class Measure:
    required: int
    fully_allocated: int


def _fail(exc: StorageCommandError, where: str) -> StorageError:
    reason = str(exc.fields.get("reason", ""))
    if "No space left on device" in reason:
        return NoSpace(where=where, reason=reason)
    return exc


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise StorageError(reason=f"cannot parse qemu-img {what} output: {e}") from None


def create(
    path: str,
    *,
    fmt: Format,
    size: int,
    backing: str | None = None,
    backing_format: Format = "qcow2",
    preallocation: Preallocation = "off",
    timeout: float = CREATE_TIMEOUT,
    abort: Aborter | None = None,
) -> None:
    """Create an image of ``size`` virtual bytes at ``path`` (a file or a block device).

    ``backing`` (qcow2 only) is stored as given: a name relative to the image's directory
    keeps a chain valid wherever the directory is (or is symlinked). Raises :class:`NoSpace`
    when the preallocation runs out of space.
    """
    if backing is not None and fmt != "qcow2":
        raise ValueError("only qcow2 images have a backing file")
    if size < 0:
        raise ValueError(f"negative size {size}")
    options = [f"preallocation={preallocation}"]
    if fmt == "qcow2":
        options.append("compat=1.1")
    args = [QEMU_IMG, "create", "-q", "-f", fmt, "-o", ",".join(options)]
    if backing is not None:
        args += ["-u", "-b", backing, "-F", backing_format]
    args += [path, str(size)]
    try:
        run(args, timeout=timeout, abort=abort)
    except StorageCommandError as e:
        raise _fail(e, path) from None


def _parse_info(node: Any) -> ImageInfo:
    if not isinstance(node, dict):
        raise StorageError(reason=f"unexpected qemu-img info entry {node!r:.100}")
    data = node.get("format-specific", {}).get("data", {})
    try:
        return ImageInfo(
            filename=str(node["filename"]),
            format=str(node["format"]),
            virtual_size=int(node["virtual-size"]),
            actual_size=int(node.get("actual-size", 0)),
            backing_filename=node.get("backing-filename"),
            full_backing_filename=node.get("full-backing-filename"),
            backing_format=node.get("backing-filename-format"),
            cluster_size=node.get("cluster-size"),
            compat=data.get("compat"),
            corrupt=bool(data.get("corrupt", False)),
            dirty=bool(node.get("dirty-flag", False)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StorageError(reason=f"unexpected qemu-img info output: {e!r}") from None


def info(path: str, *, fmt: Format | None = None, timeout: float = INFO_TIMEOUT) -> ImageInfo:
    """The image at ``path``. ``-U``: works while a VM has the image open."""
    args = [QEMU_IMG, "info", "--output", "json", "-U"]
    if fmt is not None:
        args += ["-f", fmt]
    result = run([*args, path], timeout=timeout)
    return _parse_info(_json(result.out, "info"))


def chain(path: str, *, fmt: Format | None = None,
          timeout: float = INFO_TIMEOUT) -> tuple[ImageInfo, ...]:
    """The image at ``path`` and its backing chain, top first."""
    args = [QEMU_IMG, "info", "--output", "json", "-U", "--backing-chain"]
    if fmt is not None:
        args += ["-f", fmt]
    nodes = _json(run([*args, path], timeout=timeout).out, "info")
    if not isinstance(nodes, list) or not nodes:
        raise StorageError(reason="qemu-img info --backing-chain returned no image")
    return tuple(_parse_info(node) for node in nodes)


def resize(
    path: str,
    size: int,
    *,
    fmt: Format,
    preallocation: Preallocation | None = None,
    shrink: bool = False,
    timeout: float = CREATE_TIMEOUT,
    abort: Aborter | None = None,
) -> None:
    """Set the virtual size of the image at ``path`` to ``size`` bytes."""
    args = [QEMU_IMG, "resize", "-q", "-f", fmt]
    if preallocation is not None:
        args.append(f"--preallocation={preallocation}")
    if shrink:
        args.append("--shrink")
    try:
        run([*args, path, str(size)], timeout=timeout, abort=abort)
    except StorageCommandError as e:
        raise _fail(e, path) from None


def check(path: str, *, fmt: Format = "qcow2", timeout: float = 300.0) -> CheckResult:
    """Check a qcow2 image's consistency (exit 2 = corruptions, 3 = leaks: both parsed)."""
    result = run(
        [QEMU_IMG, "check", "--output", "json", "-U", "-f", fmt, path],
        timeout=timeout,
        ok_codes=(_CHECK_OK, _CHECK_CORRUPT, _CHECK_LEAKS),
    )
    node = _json(result.out, "check")
    try:
        return CheckResult(
            filename=str(node["filename"]),
            format=str(node["format"]),
            corruptions=int(node.get("corruptions", 0)),
            leaks=int(node.get("leaks", 0)),
            check_errors=int(node.get("check-errors", 0)),
            image_end_offset=node.get("image-end-offset"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StorageError(reason=f"unexpected qemu-img check output: {e!r}") from None


def measure(
    *,
    out_format: Format,
    size: int | None = None,
    source: str | None = None,
    source_format: Format | None = None,
    timeout: float = INFO_TIMEOUT,
) -> Measure:
    """Bytes an image needs: for a new image of ``size`` or for a copy of ``source``."""
    if (size is None) == (source is None):
        raise ValueError("give exactly one of size and source")
    args = [QEMU_IMG, "measure", "--output", "json", "-O", out_format]
    if size is not None:
        args += ["--size", str(size)]
    else:
        if source_format is not None:
            args += ["-f", source_format]
        args += ["-U", str(source)]
    node = _json(run(args, timeout=timeout).out, "measure")
    try:
        return Measure(int(node["required"]), int(node["fully-allocated"]))
    except (KeyError, TypeError, ValueError) as e:
        raise StorageError(reason=f"unexpected qemu-img measure output: {e!r}") from None
