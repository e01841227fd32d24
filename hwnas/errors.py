"""The user-facing error type: one clear line naming the problem and the fix."""


class HwnasError(Exception):
    """A problem with the user's input or environment (not a bug in hwnas).

    The CLI prints ``str(error)`` as one line on stderr and exits with :attr:`exit_code`.
    """

    exit_code = 1


class UsageError(HwnasError):
    """A command-line value that cannot be used (exit code 2)."""

    exit_code = 2
