"""Exit codes, the same for every task (the README's table)."""

OK = 0
FAILED = 1  # a step failed on a host (after the recap)
BAD_INPUT = 2  # refused before anything was changed
LOCKED = 3  # another run holds the deploy lock
THRESHOLD_BREACHED = 99  # a load-test threshold did not hold (k6's convention)
INTERRUPTED_SIGHUP = 129
INTERRUPTED_SIGINT = 130
INTERRUPTED_SIGTERM = 143


class UsageError(Exception):
    """Bad input (a flag, a value, an inventory); the message is the one line shown. Exit 2."""


class StepError(Exception):
    """A step failed on a host; the message is the one line shown. Exit 1."""
