"""Task verbs: long storage operations run as tasks that outlive a restart."""

from messaging.schema.types import Field, Uuid
from messaging.schema.verbs import Verb

TASK_ID = Field("taskID", Uuid(), doc="the task's UUID")

VERBS = (
    Verb(
        "Host.getAllTasksStatuses",
        "Every task this host knows, finished or not.",
        result="{taskID: {taskID, taskState, taskResult, code, message, verb, objects, "
        "progress}} (each as Task.getStatus)",
        aliases=("getAllTasksStatuses",),
    ),
    Verb(
        "Task.getStatus",
        "One task's status.",
        (TASK_ID,),
        result="{taskID, taskState (queued|running|aborting|recovering|finished), taskResult "
        "(''|success|failure|cleanSuccess|cleanFailure), code, message, verb, objects "
        "({spUUID?, sdUUID?, imgUUID?, volUUID?}: what it works on), progress: {total, "
        "started, done, current (steps), bytesDone?, bytesTotal? (a task that writes data: "
        "live while it runs)}}",
        aliases=("getTaskStatus",),
    ),
    Verb("Task.clear", "Forget a finished task.", (TASK_ID,), aliases=("clearTask",)),
    Verb("Task.stop", "Abort a running task: its command is killed and its started steps "
         "undone.", (TASK_ID,), aliases=("stopTask",)),
    Verb(
        "Task.revert",
        "Roll back a failed or stopped task: nothing half-created remains.",
        (TASK_ID,),
        aliases=("revertTask",),
        timeout=120.0,
    ),
)
