"""Jobs: long VM operations (migrations, hibernation, restore) that answer at once.

A verb that starts a job answers once the job is recorded; the job reports its progress and
its outcome in its :class:`~actors.jobs.record.Job` record, kept by the
:class:`~actors.jobs.store.JobStore` (persisted under ``<state_dir>/jobs``, read by
``Host.getJobs`` and ``VM.getMigrationStatus`` without asking any actor) and published as
``|jobs|status|<jobID>``, the topic storage tasks use, with the same ``taskID``,
``taskState``, ``taskResult``, ``code`` and ``message`` members. :class:`~actors.jobs.slots.Slots`
limits how many jobs of a kind run at once and queues the rest.
"""
