"""PathPolicy: every path a client names, attacked with real files, links, FIFOs and device
nodes. Each refusal is InvalidParams (-32602) naming the param, and touches nothing."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.vm.params import VmParams
from actors.vm.paths import PathPolicy, create_memory_image
from messaging.errors import InvalidParams
from tests.vm.helpers import VM_ID, raw_params, validated

pytestmark = pytest.mark.timeout(20)


@dataclass
class Layout:
    images: Path
    hibernation: Path
    state: Path
    outside: Path
    policy: PathPolicy


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """An image directory that (carelessly) contains the agent's state directory."""
    images, outside = tmp_path / "images", tmp_path / "outside"
    state = images / "state"
    hibernation = tmp_path / "hibernation"
    for directory in (images, outside, state / "vms"):
        directory.mkdir(parents=True)
    policy = PathPolicy.build(image_dirs=[images], hibernation_dir=hibernation,
                              private=[state, tmp_path / "run"])
    policy.prepare()
    return Layout(images, hibernation, state, outside, policy)


def refused(call: object, *args: object, param: str = "p") -> str:
    with pytest.raises(InvalidParams) as err:
        call(*args, param)  # type: ignore[operator]
    assert err.value.code == -32602 and param in err.value.message
    return err.value.reason


def attacks(layout: Layout, where: Path) -> Iterator[tuple[str, str]]:
    """(path, what it is) of the classic attacks, made for real under ``where``."""
    secret = layout.outside / "secret"
    secret.write_text("root's")
    (where / "shadow").symlink_to("/etc/shadow")
    (where / "secret-link").symlink_to(secret)
    (where / "loop").symlink_to(where / "loop")
    (where / "a-directory").mkdir()
    os.mkfifo(where / "a-fifo")
    os.mknod(where / "a-char-device", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null
    (layout.state / "vms" / f"{VM_ID}.vm.json").write_text("{}")
    yield str(where / "shadow"), "a symlink to /etc/shadow"
    yield str(where / "secret-link"), "a symlink out of the allowed directory"
    yield f"{where}/../outside/secret", "a ../ escape"
    yield f"{where}/../../../../../../etc/passwd", "a deep ../ escape"
    yield str(layout.state / "vms" / f"{VM_ID}.vm.json"), "the agent's own state"
    yield str(where / "loop"), "a symlink loop"
    yield str(where / "a-directory"), "a directory"
    yield str(where / "a-fifo"), "a FIFO"
    yield str(where / "a-char-device"), "a device node"
    yield str(where / "absent"), "nothing"
    yield f"{where}/bad\0name", "a path with NUL"
    yield "relative/disk.img", "a relative path"
    yield f"{where}/{'x' * 300}", "a name over NAME_MAX"
    yield "/" + "a/" * 2100, "a path over PATH_MAX"
    yield "/dev/sda", "a host disk"
    yield "/proc/self/mem", "procfs"


def test_images_must_be_regular_files_or_block_devices_in_image_dirs(layout: Layout) -> None:
    disk = layout.images / "disk.img"
    disk.write_bytes(b"\0" * 512)
    (layout.images / "link-to-disk").symlink_to(disk)
    os.mknod(layout.images / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 200))
    assert layout.policy.drive_image(str(disk), "p") == str(disk)
    # A link inside the directory resolves: libvirt gets the file itself.
    assert layout.policy.drive_image(str(layout.images / "link-to-disk"), "p") == str(disk)
    (layout.images / "x").mkdir()
    assert layout.policy.drive_image(f"{layout.images}/x/../disk.img", "p") == str(disk)
    assert layout.policy.drive_image(str(layout.images / "blk"), "p") == str(
        layout.images / "blk")
    reason = refused(layout.policy.boot_file, str(layout.images / "blk"))
    assert "a block device" in reason  # a kernel is a regular file
    assert layout.policy.media("", "p") == ""  # ejecting


def test_every_attack_on_an_image_path_is_refused(layout: Layout) -> None:
    cases = list(attacks(layout, layout.images))
    before = {p: p.lstat() for p in layout.outside.parent.rglob("*")}
    for path, what in cases:
        for check in (layout.policy.drive_image, layout.policy.boot_file,
                      layout.policy.memory_image, layout.policy.media):
            with pytest.raises(InvalidParams) as err:
                check(path, "vmParams.drives[0].path")
            assert err.value.code == -32602, (what, check)
            assert "vmParams.drives[0].path" in err.value.message
    assert (layout.outside / "secret").read_text() == "root's"
    for path, st in before.items():
        assert path.lstat().st_mtime_ns == st.st_mtime_ns


def test_memory_images_only_in_the_hibernation_dir(layout: Layout) -> None:
    saved = layout.hibernation / "vm1.save"
    saved.write_bytes(b"saved state")
    assert layout.policy.memory_image(str(saved), "p") == str(saved)
    disk = layout.images / "disk.img"
    disk.write_bytes(b"")
    assert "hibernation_dir" in refused(layout.policy.memory_image, str(disk))
    # ...and never a drive, even where image_dirs contain it: no VM reads another's memory.
    wide = PathPolicy.build(image_dirs=[layout.hibernation.parent],
                            hibernation_dir=layout.hibernation, private=[layout.state])
    assert "not a client's" in refused(wide.drive_image, str(saved))
    assert stat.S_IMODE(layout.hibernation.stat().st_mode) == 0o700


def test_a_new_memory_image_is_a_new_file_created_0600(layout: Layout) -> None:
    old_umask = os.umask(0)
    try:
        target = layout.policy.new_memory_image(str(layout.hibernation / "vm1.save"), "p")
        create_memory_image(target, "p")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(Path(target).stat().st_mode) == 0o600
    # It exists now: never written over, nor created again.
    assert "exists already" in refused(layout.policy.new_memory_image, target)
    assert "exists already" in refused(create_memory_image, target)
    # A link planted after the check is not followed either.
    late = layout.policy.new_memory_image(str(layout.hibernation / "late.save"), "p")
    victim = layout.outside / "victim"
    victim.write_text("keep me")
    Path(late).symlink_to(victim)
    assert "exists already" in refused(create_memory_image, late)
    assert victim.read_text() == "keep me"


def test_every_attack_on_a_new_memory_image_is_refused(layout: Layout) -> None:
    existing = layout.hibernation / "existing.save"
    existing.write_text("an earlier image")
    (layout.hibernation / "sub").mkdir()
    cases = [
        (str(existing), "an existing image"),
        (str(layout.hibernation), "the directory itself"),
        (f"{layout.hibernation}/", "no file name"),
        (f"{layout.hibernation}/..", "a .. name"),
        (f"{layout.hibernation}/../images/x.save", "a ../ escape"),
        (str(layout.images / "x.save"), "an image directory"),
        (str(layout.state / "vms" / "x.save"), "the state directory"),
        (str(layout.state / "vms" / f"{VM_ID}.vm.json"), "the agent's own state"),
        ("/etc/shadow", "an unrelated existing file"),
        ("/tmp/x.save", "anywhere else"),
        (f"{layout.hibernation}/absent-dir/x.save", "a missing directory"),
        (f"{layout.hibernation}/{'x' * 300}", "a name over NAME_MAX"),
        (f"{layout.hibernation}/a\0b", "NUL"),
        ("x.save", "a relative path"),
    ]
    (layout.hibernation / "dangling").symlink_to(layout.outside / "absent")
    cases.append((str(layout.hibernation / "dangling"), "a dangling symlink"))
    (layout.hibernation / "out").symlink_to(layout.outside)
    cases.append((str(layout.hibernation / "out" / "x.save"), "a directory link out"))
    for path, what in cases:
        with pytest.raises(InvalidParams) as err:
            layout.policy.new_memory_image(path, "hiberVolHandle")
        assert err.value.code == -32602 and "hiberVolHandle" in err.value.message, what
    assert existing.read_text() == "an earlier image"
    assert sorted(p.name for p in layout.outside.iterdir()) == []
    # A subdirectory of the hibernation directory is fine.
    assert layout.policy.new_memory_image(f"{layout.hibernation}/sub/x.save", "p") == str(
        layout.hibernation / "sub" / "x.save")


def test_create_params_resolved_and_checked(layout: Layout) -> None:
    kernel, disk = layout.images / "vmlinuz", layout.images / "disk.img"
    kernel.write_bytes(b"k")
    disk.write_bytes(b"d")
    (layout.images / "alias.img").symlink_to(disk)
    params = VmParams.from_dict(VM_ID, validated(raw_params(
        kernel=f"{layout.images}/./vmlinuz",
        drives=[{"path": str(layout.images / "alias.img")}, {"device": "cdrom"}])))
    checked = layout.policy.check_params(params)
    assert checked.kernel == str(kernel)
    assert checked.drives[0].path == str(disk) and checked.drives[1].is_empty
    twice = VmParams.from_dict(VM_ID, validated(raw_params(
        drives=[{"path": str(disk)}, {"path": str(layout.images / "alias.img")}])))
    with pytest.raises(InvalidParams, match=r"vmParams\.drives\[1\]\.path.*drives\[0\]"):
        layout.policy.check_params(twice)
    for field, value in (("kernel", "/etc/shadow"), ("initrd", "/etc/shadow"),
                         ("restoreState", str(disk))):
        extra = {"kernel": str(kernel)} if field == "initrd" else {}
        bad = VmParams.from_dict(VM_ID, validated(raw_params(**{field: value, **extra})))
        with pytest.raises(InvalidParams, match=rf"vmParams\.{field}"):
            layout.policy.check_params(bad)


def test_hibernation_dir_must_be_its_own(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hibernation_dir"):
        PathPolicy.build(image_dirs=[], hibernation_dir=tmp_path, private=[tmp_path / "s"])
    with pytest.raises(ValueError, match="hibernation_dir"):
        PathPolicy.build(image_dirs=[], hibernation_dir=tmp_path, private=[tmp_path])


def test_the_default_layout_memory_images_inside_the_state_dir(tmp_path: Path) -> None:
    """By default the hibernation directory is <state_dir>/hibernation: memory images may be
    there, and nothing else of the state directory is a client's."""
    state = tmp_path / "state"
    (state / "vms").mkdir(parents=True)
    policy = PathPolicy.build(image_dirs=[tmp_path], hibernation_dir=state / "hibernation",
                              private=[state])
    policy.prepare()
    target = policy.new_memory_image(str(state / "hibernation" / "vm.save"), "p")
    create_memory_image(target, "p")
    assert policy.memory_image(target, "p") == target
    assert "hibernation_dir" in refused(policy.new_memory_image, str(state / "vms" / "x"))
    assert "not a client's" in refused(policy.drive_image, target)
