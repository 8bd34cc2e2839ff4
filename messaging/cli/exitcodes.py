"""The exit codes of ``vdsm-client``: each says what happened, for scripts.

=====  ===============================================================================
code   meaning
=====  ===============================================================================
0      success (with ``--wait``: the task succeeded, the job is done)
1      not found: no such VM, storage domain, pool, image, volume, task or actor
       (codes 1, 103, 201-204, 401), a VM name that names no VM, or a job the agent does
       not list (``Job wait``)
2      usage: unknown namespace, verb or option, a word that is not ``name=value``
3      no reply: no agent at the endpoint, or none answered within ``--timeout``
4      invalid params (-32602), found by the client or by the agent
5      any other error the agent answered (printed as JSON on stderr), or a task or job
       that ended in failure (or aborted) with no code of the kinds above
=====  ===============================================================================

PROTOCOL.md's first contract was "1 on any error reply". Scripts written against it can set
``VDSM_CLIENT_EXIT_CODES=legacy``: every error reply then exits 1 again (deprecated; to be
removed).
"""

from __future__ import annotations

import os

from messaging import errors

OK = 0
NOT_FOUND = 1
USAGE = 2
NO_REPLY = 3
INVALID = 4
FAILED = 5

LEGACY_ENV = "VDSM_CLIENT_EXIT_CODES"

#: the error codes that mean "there is no such thing" (the NoSuch* classes)
NOT_FOUND_CODES = frozenset(
    cls.code for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.VdsmError)
    and cls.__name__.startswith("NoSuch") and cls.code > 0
)

HELP = """\
exit codes:
  0  success (with --wait: the task succeeded, the job is done)
  1  not found: no such VM, domain, pool, image, volume, task or actor; a VM name that
     names no VM; a job the agent does not list (Job wait)
  2  usage: unknown namespace, verb or option; a word that is not name=value
  3  no reply: no agent at the endpoint, or no answer within --timeout
  4  invalid params (-32602), found by vdsm-client or by the agent
  5  any other error reply (printed as JSON on stderr); a task or job that ended in
     failure or was aborted (another error; a failed job's error code maps as above)
  (VDSM_CLIENT_EXIT_CODES=legacy: every error reply exits 1, as PROTOCOL.md first said)"""


def for_error(code: int) -> int:
    """The exit code of an error reply with ``code``."""
    if os.environ.get(LEGACY_ENV) == "legacy":
        return NOT_FOUND
    if code in NOT_FOUND_CODES:
        return NOT_FOUND
    if code == errors.InvalidParams.code:
        return INVALID
    return FAILED
