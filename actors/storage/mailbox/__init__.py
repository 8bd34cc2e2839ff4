"""The storage mailbox between the hosts of a pool and its SPM (docs/mailbox.md)."""
