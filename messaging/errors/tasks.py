"""Task errors (codes 400-499)."""

from __future__ import annotations

from messaging.errors.base import VdsmError


class TaskError(VdsmError):
    code = 400
    template = "task error: {reason}"


class NoSuchTask(TaskError):
    code = 401
    template = "no such task: {taskID}"


class TaskNotFinished(TaskError):
    code = 402
    template = "task {taskID} is not finished (state {state})"


class TaskStateError(TaskError):
    code = 403
    template = "task {taskID} cannot {action} in state {state}"


class TaskAborted(TaskError):
    code = 404
    template = "task {taskID} was aborted: {reason}"
