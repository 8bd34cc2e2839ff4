"""vdsm-client's pieces without an agent: values from the schema, verbs and aliases,
did-you-mean, output formats, exit codes, task and job progress lines, bash completion (run
in a real bash)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from messaging.cli import completion, exitcodes, names, output, resolve, values, vmlist, wait
from messaging.errors import InvalidParams
from messaging.schema import SCHEMA
from messaging.schema.types import parse_size
from messaging.schema.verbs import Schema

pytestmark = pytest.mark.timeout(60)

VM_ID = "6f1b9e4a-4a4e-4c53-9c0c-2f5c1e0e7b11"


def verb(name: str):  # type: ignore[no-untyped-def]
    return SCHEMA.lookup(name)


# --- values ---------------------------------------------------------------------------------


def test_strings_stay_strings_when_the_schema_says_string() -> None:
    params = values.parse_words(verb("VM.setTicket"), ["password=123456", "ttl=30"])
    assert params == {"password": "123456", "ttl": 30}
    params = values.parse_words(verb("Volume.create"), ["desc=2024", "volFormat=cow"])
    assert params == {"desc": "2024", "volFormat": "cow"}
    params = values.parse_words(verb("Actors.inspect"), ["path=5"])
    assert params == {"path": "5"}
    assert values.parse_words(verb("StorageDomain.create"), ["name=true"]) == {"name": "true"}


@pytest.mark.parametrize(("text", "unit", "expected"), [
    ("4096", 1, 4096), ("512M", 1, 512 << 20), ("1G", 1, 1 << 30), ("1.5GiB", 1, 3 << 29),
    ("2t", 1, 2 << 40), ("512MB", 1, 512 << 20), ("1G", 1 << 20, 1024), ("128", 1 << 20, 128),
    ("64K", 1, 65536),
])
def test_sizes_take_units(text: str, unit: int, expected: int) -> None:
    assert parse_size(text, unit) == expected


@pytest.mark.parametrize("text", ["1.5", "abc", "512X", "-1G", "1.3B", "1 G B", ""])
def test_a_bad_size_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|whole"):
        parse_size(text)


def test_a_size_that_is_not_a_whole_number_of_its_unit_is_refused_not_rounded() -> None:
    with pytest.raises(ValueError, match="MiB"):
        parse_size("1.1K", 1 << 20)


def test_size_params_and_sizes_inside_json() -> None:
    params = values.parse_words(verb("Volume.create"), ["size=1G", "initialSize=512M"])
    assert params == {"size": 1 << 30, "initialSize": 512 << 20}
    params = values.parse_words(
        verb("VM.create"), ['vmParams={"vmName": "a", "memSize": "1G", '
                            '"drives": [{"path": "/x", "thresholdMiB": "1G"}]}'])
    assert params["vmParams"]["memSize"] == 1024
    assert params["vmParams"]["drives"][0]["thresholdMiB"] == 1024
    with pytest.raises(InvalidParams, match=r"vmParams\.memSize"):
        values.parse_words(verb("VM.create"), ['vmParams={"memSize": "lots"}'])


def test_enums_are_checked_here_with_the_allowed_values() -> None:
    with pytest.raises(InvalidParams) as info:
        values.parse_words(verb("Volume.create"), ["volFormat=qcow2"])
    assert info.value.param == "volFormat"
    assert "cow, raw" in info.value.message


def test_booleans_integers_and_json() -> None:
    assert values.parse_words(verb("Host.getVMList"), ["fullStatus=yes"]) == \
        {"fullStatus": True}
    with pytest.raises(InvalidParams, match="true or false"):
        values.parse_words(verb("Host.getVMList"), ["fullStatus=maybe"])
    with pytest.raises(InvalidParams, match="integer"):
        values.parse_words(verb("VM.shutdown"), ["delay=soon"])
    with pytest.raises(InvalidParams, match="JSON"):
        values.parse_words(verb("StoragePool.create"), ["domainList=[oops"])


def test_json_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "vm.json").write_text(json.dumps({"vmName": "a", "memSize": "256M"}))
    params = values.parse_words(verb("VM.create"), [f"vmParams=@{tmp_path}/vm.json"])
    assert params["vmParams"] == {"vmName": "a", "memSize": 256}
    with pytest.raises(InvalidParams, match="cannot read"):
        values.parse_words(verb("VM.create"), [f"vmParams=@{tmp_path}/none.json"])


def test_an_unknown_param_gets_did_you_mean_and_the_params() -> None:
    with pytest.raises(InvalidParams) as info:
        values.parse_words(verb("Volume.create"), ["sise=1G"])
    assert "did you mean size?" in info.value.message
    assert "volFormat" in info.value.message
    with pytest.raises(values.WordError):
        values.parse_words(verb("Host.ping"), ["novalue"])


# --- verbs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("words", "name"), [
    (["ping"], "Host.ping"), (["Host", "ping"], "Host.ping"), (["Host.ping"], "Host.ping"),
    (["host", "PING"], "Host.ping"), (["VM", "continue"], "VM.cont"),
    (["VM", "getVmStats"], "VM.getStats"), (["getVdsCapabilities"], "Host.getCapabilities"),
    (["list"], "Host.getVMList"), (["Image", "prepareVolume"], "Image.prepare"),
])
def test_every_alias_works_on_the_command_line(words: list[str], name: str) -> None:
    target = resolve.resolve(words)
    assert target.verb is not None and target.verb.name == name


def test_every_declared_alias_resolves() -> None:
    for alias, name in SCHEMA.aliases().items():
        target = resolve.resolve([alias]) if "." not in alias else None
        if target is not None:
            assert target.verb is not None and target.verb.name == name
        ns = name.split(".", 1)[0]
        target = resolve.resolve([ns, alias])
        assert target.verb is not None and target.verb.name == name, alias


def test_client_commands() -> None:
    assert resolve.resolve(["VM", "list"]).command == "VM list"
    target = resolve.resolve(["Task", "wait", VM_ID])
    assert (target.command, target.rest) == ("Task wait", (VM_ID,))
    target = resolve.resolve(["job", "wait", VM_ID])  # the client's own namespace, any case
    assert (target.command, target.rest) == ("Job wait", (VM_ID,))
    with pytest.raises(resolve.UsageError, match="Job needs a verb"):
        resolve.resolve(["Job"])
    assert "Job" in resolve.all_namespaces() and "Job" not in SCHEMA.namespaces()


@pytest.mark.parametrize(("words", "hint"), [
    (["VM", "destory"], "did you mean destroy?"), (["Hots", "ping"], "did you mean Host?"),
    (["pnig"], "did you mean ping?"), (["VM", "lst"], "did you mean list?"),
])
def test_a_wrong_name_gets_did_you_mean(words: list[str], hint: str) -> None:
    with pytest.raises(resolve.UsageError) as info:
        resolve.resolve(words)
    assert hint in str(info.value)


def test_a_wrong_verb_lists_the_namespace_and_marks_what_is_not_implemented(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the real schema with Host.fenceNode declared but not implemented (whichever verbs the
    # agent implements by now: the listing's marking is under test, not the schema)
    marked = Schema(dataclasses.replace(v, implemented=False) if v.name == "Host.fenceNode"
                    else v for v in SCHEMA)
    monkeypatch.setattr(resolve, "SCHEMA", marked)
    with pytest.raises(resolve.UsageError) as info:
        resolve.resolve(["Host", "fenceNod"])
    text = str(info.value)
    assert "did you mean fenceNode?" in text
    assert "getCapabilities" in text and "getStats" in text
    fence = next(line for line in text.splitlines() if line.strip().startswith("fenceNode"))
    assert "(not implemented)" in fence
    ping = next(line for line in text.splitlines() if line.strip().startswith("ping"))
    assert "not implemented" not in ping


# --- exit codes, output, progress ------------------------------------------------------------


def test_exit_codes_by_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [exitcodes.for_error(c) for c in (1, 201, 204, 401, 103)] == [1] * 5
    assert exitcodes.for_error(-32602) == exitcodes.INVALID
    assert [exitcodes.for_error(c) for c in (4, 5, 100, 208, -32601, -32603)] == \
        [exitcodes.FAILED] * 6
    assert len({exitcodes.OK, exitcodes.NOT_FOUND, exitcodes.USAGE, exitcodes.NO_REPLY,
                exitcodes.INVALID, exitcodes.FAILED}) == 6
    monkeypatch.setenv(exitcodes.LEGACY_ENV, "legacy")
    assert exitcodes.for_error(-32602) == exitcodes.for_error(5) == 1


def test_output_formats() -> None:
    rows = [{"path": "/a", "state": "running", "detail": {"x": [1, 2]}},
            {"path": "/b", "state": "gave-up"}]
    table = output.render(rows, "table").splitlines()
    assert table[0].split() == ["PATH", "STATE", "DETAIL"]
    assert table[1].split() == ["/a", "running", '{"x":[1,2]}']
    assert table[2].split() == ["/b", "gave-up", "-"]
    assert yaml.safe_load(output.render(rows, "yaml")) == rows
    assert json.loads(output.render(rows, "json")) == rows
    tasks = output.render({"t1": {"taskState": "finished"}}, "table").splitlines()
    assert tasks == ["ID  TASKSTATE", "t1  finished"]
    assert output.render(True, "table") == "true"
    assert json.loads(output.render({"b": b"\x00\x01"}, "json")) == {"b": {"$base64": "AAE="}}


def test_progress_lines_and_outcomes() -> None:
    status = {"taskID": "t", "verb": "Volume.create", "taskState": "running",
              "taskResult": "", "progress": {"total": 6, "started": 4, "done": 3,
                                             "current": "data", "bytesDone": 512 << 20,
                                             "bytesTotal": 1 << 30}}
    assert wait.describe(status) == \
        "task t Volume.create: running, step 4/6 (data), 512 MiB of 1 GiB (50%)"
    done = {**status, "taskState": "finished", "taskResult": "success", "message": "done",
            "code": 0}
    assert wait.outcome(done) == exitcodes.OK
    assert wait.outcome({**done, "taskResult": "failure", "code": 211}) == exitcodes.FAILED
    assert wait.outcome({**done, "taskResult": "failure", "code": 201}) == exitcodes.NOT_FOUND
    assert wait.outcome({**done, "taskResult": "cleanSuccess", "code": 0}) == exitcodes.FAILED


def test_job_progress_lines_and_outcomes() -> None:
    job = {"id": "j", "job_type": "migrate_out", "vmID": "v", "status": "running",
           "progress": 42, "description": "to peer2", "dataRemaining": 96 << 20,
           "bandwidth": 31.5}
    assert wait.describe_job(job) == \
        "job j migrate_out of VM v: running (to peer2), 42%, 96 MiB to go at 31.5 MiB/s"
    saving = {"id": "j", "job_type": "hibernate", "vmID": "v", "status": "pending",
              "progress": 0, "description": ""}
    assert wait.describe_job(saving) == "job j hibernate of VM v: pending, 0%"
    done = {**saving, "status": "done", "progress": 100, "description": "done"}
    assert wait.describe_job(done) == "job j hibernate of VM v: done, 100%"
    # a hibernation's or a restore's bytes of its image: written so far, or of its size
    assert wait.describe_job({**saving, "status": "running", "progress": 40,
                              "bytesDone": 3 << 20}) == \
        "job j hibernate of VM v: running, 40%, 3 MiB so far"
    assert wait.describe_job({**saving, "status": "running", "progress": 50,
                              "bytesDone": 24 << 20, "bytesTotal": 48 << 20}) == \
        "job j hibernate of VM v: running, 50%, 24 MiB of 48 MiB"
    assert wait.describe_job({**done, "bytesDone": 5 << 19, "bytesTotal": 5 << 19}) == \
        "job j hibernate of VM v: done, 100%, 2.5 MiB of 2.5 MiB"
    assert wait.job_outcome(done) == exitcodes.OK
    failed = {**saving, "status": "failed", "error": {"code": 6, "message": "hook: not now"}}
    assert wait.describe_job(failed) == "job j hibernate of VM v: failed (code 6): hook: not now"
    assert wait.job_outcome(failed) == exitcodes.FAILED
    assert wait.job_outcome({**failed, "error": {"code": 1, "message": "gone"}}) == \
        exitcodes.NOT_FOUND
    assert wait.job_outcome({**failed, "error": {"code": -32602, "message": "x"}}) == \
        exitcodes.INVALID
    aborted = {**saving, "status": "aborted", "error": {"code": 0, "message": ""}}
    assert wait.describe_job(aborted) == "job j hibernate of VM v: aborted: no reason given"
    assert wait.job_outcome(aborted) == exitcodes.FAILED
    assert wait.job_outcome({**saving, "status": "failed"}) == exitcodes.FAILED  # no error
    # a job forgotten as it ended: its |jobs|status| event says how
    event = {"taskID": "j", "taskState": "finished", "taskResult": "failure", "code": 6,
             "message": "hook: not now", "jobID": "j", "job_type": "hibernate", "vmID": "v",
             "status": "failed", "progress": 0}
    assert wait.job_from_event(event) == {**failed, "description": "hook: not now"}
    ended = {**event, "status": "done", "taskResult": "success", "code": 0,
             "bytesDone": 7, "bytesTotal": 7}
    assert wait.job_from_event(ended)["bytesDone"] == 7


def test_which_verbs_start_a_job() -> None:
    assert {v.name for v in SCHEMA if v.job} == {"VM.hibernate", "VM.migrate", "VM.create"}
    assert all("jobID" in v.by_name and not v.by_name["jobID"].required
               for v in SCHEMA if v.job)  # the client can name the job it follows
    assert not any(v.job and v.starts_task for v in SCHEMA)
    create = verb("VM.create")
    assert create.starts_job({"vmParams": {"restoreState": "/x"}})
    assert not create.starts_job({"vmParams": {"vmName": "x"}})
    assert not create.starts_job({"vmParams": "@junk"})  # not a map: no job (the agent refuses)
    assert verb("VM.hibernate").starts_job({}) and not verb("VM.pause").starts_job({})


def test_vm_names_resolve_to_one_vm_or_are_refused() -> None:
    vms = [{"vmID": VM_ID, "vmName": "web1"}, {"vmID": "b", "vmName": "twin"},
           {"vmID": "a", "vmName": "twin"}]
    assert names.vm_id_of("web1", vms) == VM_ID
    with pytest.raises(names.NoSuchName, match="nor the name"):
        names.vm_id_of("web2", vms)
    with pytest.raises(InvalidParams, match="2 VMs are named 'twin' \\(a, b\\)"):
        names.vm_id_of("twin", vms)
    calls: list[str] = []

    def call(method: str, _params: dict[str, object]) -> object:
        calls.append(method)
        return vms

    same = {"vmID": VM_ID}
    assert names.resolve_names(verb("VM.pause"), same, call) is same
    assert calls == []  # a UUID needs no lookup
    assert names.resolve_names(verb("VM.pause"), {"vmID": "web1"}, call) == {"vmID": VM_ID}


def test_vm_list_rows() -> None:
    stats = [{"vmID": VM_ID, "vmName": "web1", "status": "Up", "cpuUser": 1.5, "cpuSys": 0.5,
              "memSize": 128, "elapsedTime": 3700.0, "statsAge": 1.0,
              "displayInfo": [{"type": "vnc", "port": 5901, "tlsPort": -1,
                               "ipAddress": "127.0.0.1"}]},
             {"vmID": "x", "vmName": "old", "status": "Down", "displayInfo": []}]
    rows = vmlist.rows(stats)
    assert [r["name"] for r in rows] == ["old", "web1"]
    web1 = rows[1]
    assert (web1["cpu"], web1["memory"], web1["display"], web1["uptime"]) == \
        (2.0, 128, "vnc 127.0.0.1:5901", 3701.0)
    table = vmlist.render(rows).splitlines()
    assert table[0].split() == ["NAME", "ID", "STATUS", "CPU%", "MEMORY", "DISPLAY", "UPTIME"]
    assert "1h01m" in table[2] and "vnc 127.0.0.1:5901" in table[2]


# --- bash completion, in a real bash --------------------------------------------------------


def complete(line: str) -> list[str]:
    """What the generated script offers for ``line`` (the cursor at its end)."""
    script = completion.bash() + (
        f'COMP_LINE={json.dumps(line)}\nCOMP_POINT=${{#COMP_LINE}}\n'
        "_vdsm_client\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion() -> None:
    assert "VM" in complete("vdsm-client ") and "Host" in complete("vdsm-client ")
    assert complete("vdsm-client St") == ["StorageDomain", "StoragePool"]
    assert complete("vdsm-client VM pa") == ["pause"]
    assert "continue" in complete("vdsm-client VM con")  # aliases too
    assert "list" in complete("vdsm-client VM l")
    assert complete("vdsm-client VM create v") == ["vmID=", "vmParams="]
    assert complete("vdsm-client --api ipc:///x VM destroy ") == ["vmID="]
    assert complete("vdsm-client Volume create volFormat=c") == ["cow"]
    assert complete("vdsm-client ping ") == []
    assert complete("vdsm-client -o t") == ["table"]
    assert "--wait" in complete("vdsm-client --w")
    assert complete("vdsm-client Jo") == ["Job"] and complete("vdsm-client Job ") == ["wait"]
    assert set(complete("vdsm-client Volume create storagepoolID=x s")) >= {
        "size=", "storagedomainID=", "srcImgUUID="}
