"""The hook runner, with real executables in a temporary hooks directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from actors.vm.hooks import BASE_ENV, HOOK_NAMES, HookRunner
from messaging.errors import HookError
from tests.vm.helpers import VM_ID

XML = "<domain type='qemu'><name>vm1</name></domain>"


def hook(hooks: Path, name: str, script: str, body: str, *, mode: int = 0o755) -> Path:
    directory = hooks / name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / script
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


@pytest.mark.timeout(10)
def test_no_hooks_returns_the_xml(tmp_path: Path) -> None:
    runner = HookRunner(tmp_path / "absent")
    assert runner.run("before_vm_start", XML, vm_id=VM_ID) == XML
    assert runner.scripts("after_vm_destroy") == []


@pytest.mark.timeout(10)
def test_hooks_run_in_name_order_and_may_rewrite(tmp_path: Path) -> None:
    log = tmp_path / "order"
    hook(tmp_path, "before_vm_start", "20_second",
         f'echo second >> {log}\nsed -i "s/vm1/vm2/" "$_hook_domxml"\n')
    hook(tmp_path, "before_vm_start", "10_first",
         f'echo first >> {log}\nsed -i "s/vm1/vm1-first/" "$_hook_domxml"\n')
    hook(tmp_path, "before_vm_start", "30_third", f'echo third >> {log}\n')
    hook(tmp_path, "before_vm_start", "05_not_executable", f"echo never >> {log}\n", mode=0o644)
    hook(tmp_path, "before_vm_start", ".hidden", f"echo never >> {log}\n")
    (tmp_path / "before_vm_start" / "00_a_directory").mkdir()
    runner = HookRunner(tmp_path)
    assert [p.name for p in runner.scripts("before_vm_start")] == [
        "10_first", "20_second", "30_third"
    ]
    result = runner.run("before_vm_start", XML, vm_id=VM_ID)
    assert result == "<domain type='qemu'><name>vm2-first</name></domain>"  # chained
    assert log.read_text().split() == ["first", "second", "third"]


@pytest.mark.timeout(10)
def test_hook_environment(tmp_path: Path) -> None:
    out = tmp_path / "env"
    hook(
        tmp_path,
        "after_vm_start",
        "dump",
        f'echo "$vmId|$_hook_name|$custom_sap_agent|$(cat "$_hook_domxml")|$SECRET_OF_AGENT|'
        f'$sap_agent" > {out}\n',
    )
    os.environ["SECRET_OF_AGENT"] = "leaked"
    try:
        HookRunner(tmp_path).run("after_vm_start", XML, vm_id=VM_ID, env={"sap_agent": "true"})
    finally:
        del os.environ["SECRET_OF_AGENT"]
    assert out.read_text().strip() == f"{VM_ID}|after_vm_start|true|{XML}||"


@pytest.mark.timeout(10)
def test_custom_properties_cannot_steer_a_root_hook(tmp_path: Path) -> None:
    """Custom properties named like what a shell, the dynamic linker or a PATH lookup obey
    reach a (bash) hook only under their prefix; the hook's PATH is the fixed one."""
    marker = tmp_path / "injected"
    evil_bin = tmp_path / "evil-bin"
    evil_bin.mkdir()
    (evil_bin / "cat").write_text(f"#!/bin/sh\ntouch {marker}-path\n")
    (evil_bin / "cat").chmod(0o755)
    startup = tmp_path / "startup.sh"
    startup.write_text(f"touch {marker}-bash-env\n")
    dump = tmp_path / "env"
    script = hook(tmp_path, "before_vm_start", "10_env", "")
    script.write_text(f"#!/bin/bash\ncat /dev/null\nenv > {dump}\n")
    custom = {
        "PATH": str(evil_bin), "BASH_ENV": str(startup), "ENV": str(startup),
        "SHELLOPTS": "xtrace", "PS4": f"$(touch {marker}-ps4)", "LD_PRELOAD": "/nonexistent.so",
        "LD_LIBRARY_PATH": str(evil_bin), "IFS": "/", "_hook_domxml": "/etc/shadow",
        "vmId": "someone-else",
    }
    HookRunner(tmp_path).run("before_vm_start", XML, vm_id=VM_ID, env=custom)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("injected")) == []
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert seen["PATH"] == BASE_ENV["PATH"]
    for name in ("BASH_ENV", "ENV", "PS4", "LD_PRELOAD", "LD_LIBRARY_PATH"):
        assert name not in seen, name
    assert seen["vmId"] == VM_ID and seen["_hook_domxml"] != "/etc/shadow"
    assert {k: v for k, v in seen.items() if k.startswith("custom_")} == {
        f"custom_{k}": v for k, v in custom.items()}


@pytest.mark.timeout(10)
def test_the_xml_file_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "where"
    hook(tmp_path, "after_vm_destroy", "where", f'echo "$_hook_domxml" > {out}\n')
    HookRunner(tmp_path).run("after_vm_destroy", XML, vm_id=VM_ID)
    assert not Path(out.read_text().strip()).exists()


@pytest.mark.timeout(10)
def test_failing_hook_names_itself_and_quotes_stderr(tmp_path: Path) -> None:
    later = tmp_path / "later"
    hook(tmp_path, "before_vm_start", "10_fail",
         "echo 'noise' >&2\necho 'the license server is down' >&2\nexit 3\n")
    hook(tmp_path, "before_vm_start", "20_later", f"touch {later}\n")
    with pytest.raises(HookError) as err:
        HookRunner(tmp_path).run("before_vm_start", XML, vm_id=VM_ID)
    assert err.value.code == 6
    assert "before_vm_start/10_fail" in err.value.message
    assert "exit code 3" in err.value.message
    assert "the license server is down" in err.value.message
    assert not later.exists(), "hooks after a failed one must not run"


@pytest.mark.timeout(10)
def test_stderr_tail_is_bounded(tmp_path: Path) -> None:
    hook(tmp_path, "after_vm_pause", "chatty",
         "i=0; while [ $i -lt 2000 ]; do echo line$i >&2; i=$((i+1)); done\necho LAST >&2\n"
         "exit 1\n")
    with pytest.raises(HookError) as err:
        HookRunner(tmp_path).run("after_vm_pause", XML, vm_id=VM_ID)
    assert err.value.message.endswith("LAST")
    assert len(err.value.message) < 2300
    assert "line0\n" not in err.value.message


@pytest.mark.timeout(20)
def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    hook(tmp_path, "before_vm_pause", "hang",
         f"echo 'starting to hang' >&2\nsleep 300 &\necho $! > {child_pid}\nwait\n")
    started = time.monotonic()
    with pytest.raises(HookError) as err:
        HookRunner(tmp_path, timeout=30).run("before_vm_pause", XML, vm_id=VM_ID, timeout=1.0)
    assert time.monotonic() - started < 5
    assert "before_vm_pause/hang" in err.value.message
    assert "timed out after 1 s" in err.value.message
    assert "starting to hang" in err.value.message
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, "the hook's child survived the timeout"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(")")[-1].split()[0] != "Z"


@pytest.mark.timeout(10)
def test_invalid_xml_left_by_a_hook(tmp_path: Path) -> None:
    hook(tmp_path, "before_vm_start", "break", 'echo "<domain>" > "$_hook_domxml"\n')
    with pytest.raises(HookError, match="invalid domain XML"):
        HookRunner(tmp_path).run("before_vm_start", XML, vm_id=VM_ID)


@pytest.mark.timeout(10)
def test_unrunnable_hook(tmp_path: Path) -> None:
    path = hook(tmp_path, "before_vm_cont", "bad", "")
    path.write_bytes(b"\x7fELF garbage")
    with pytest.raises(HookError, match="before_vm_cont/bad"):
        HookRunner(tmp_path).run("before_vm_cont", XML, vm_id=VM_ID)


@pytest.mark.timeout(10)
def test_restore_alias_directory(tmp_path: Path) -> None:
    log = tmp_path / "log"
    hook(tmp_path, "after_vm_dehibernate", "a", f"echo dehibernate >> {log}\n")
    hook(tmp_path, "after_vm_restore", "a", f"echo restore >> {log}\n")
    HookRunner(tmp_path).run("after_vm_dehibernate", XML, vm_id=VM_ID)
    assert log.read_text().split() == ["dehibernate", "restore"]


@pytest.mark.timeout(10)
def test_unknown_hook_name_is_a_bug(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown hook"):
        HookRunner(tmp_path).run("before_vm_explode", XML, vm_id=VM_ID)
    assert {"before_vm_start", "after_vm_destroy", "before_vm_migrate_source",
            "before_vm_shutdown", "after_vm_dehibernate"} <= HOOK_NAMES
