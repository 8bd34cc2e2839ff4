"""Task verbs: long storage operations run as tasks that outlive a restart."""

from messaging.schema.types import Field, Uuid
from messaging.schema.verbs import Verb

TASK_ID = Field("taskID", Uuid(), doc="the task's UUID")

VERBS = (
    Verb(
        "Host.getAllTasksStatuses",
        "Every task this host knows, finished or not.",
        result="{taskID: {taskState, taskResult, code, message, verb, progress}}",
        aliases=("getAllTasksStatuses",),
    ),
    Verb(
        "Task.getStatus",
        "One task's status.",
        (TASK_ID,),
        result="{taskID, taskState (queued|running|aborting|recovering|finished), taskResult "
        "(''|success|failure|cleanSuccess|cleanFailure), code, message, verb, progress: "
        "{total, started, done, current}}",
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
