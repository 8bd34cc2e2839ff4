"""The writer's verbs: what vdsmd asks the SPM's writer process to do (over ipc).

The writer serves them with the same :class:`~messaging.server.ApiServer` as the agent's API
(validation, bounded workers, deadlines), on an ipc socket in the keeper's run dir (mode
0600). Only vdsmd talks to it.
"""

from __future__ import annotations

from messaging.schema.types import AnyValue, Enum, Field, Int, ListOf, MapOf, Str, Uuid
from messaging.schema.verbs import Schema, Verb

TASK_TIMEOUT = 7 * 24 * 3600.0  # a task runs as long as its steps do; Task.stop ends it

WRITER_SCHEMA = Schema([
    Verb("Writer.ping", "The writer's lease version and pid."),
    Verb("Writer.changePool", "Change the pool's metadata on its master domain.",
         (Field("action", Enum(("attach", "detach", "activate", "deactivate"))),
          Field("sdUUID", Uuid())), timeout=120.0),
    Verb("Writer.runTask", "Run an SPM task to its end (journaled on the master domain).",
         (Field("taskID", Uuid()), Field("verb", Str(max_len=64)),
          Field("params", MapOf(AnyValue()))), timeout=TASK_TIMEOUT),
    Verb("Writer.revertTask", "Undo the first `started` steps of a failed task.",
         (Field("taskID", Uuid()), Field("verb", Str(max_len=64)),
          Field("params", MapOf(AnyValue())), Field("started", Int(min=0))),
         timeout=TASK_TIMEOUT),
    Verb("Writer.taskProgress", "How far a running task got (None when it does not run).",
         (Field("taskID", Uuid()),)),
    Verb("Writer.abortTask", "Abort a running task (kills its command).",
         (Field("taskID", Uuid()),)),
    Verb("Writer.recoverTasks", "Finish or undo the tasks a previous SPM left unfinished.",
         timeout=TASK_TIMEOUT),
    Verb("Writer.serveMail", "Serve one host's mailbox requests and write its replies.",
         (Field("hostID", Int(min=1, max=2000)),
          Field("requests", ListOf(MapOf(AnyValue()), max_len=31)),
          Field("keep", ListOf(MapOf(AnyValue()), max_len=31))), timeout=300.0),
    Verb("Writer.extendVolume", "Grow a volume's allocation to at least size bytes.",
         (Field("sdUUID", Uuid()), Field("imgUUID", Uuid()), Field("volUUID", Uuid()),
          Field("size", Int(min=1))), timeout=120.0),
])
