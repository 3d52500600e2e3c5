"""User-facing errors: one line that names the problem and the fix."""


class MlmError(Exception):
    """An error caused by the user's input or environment.

    The CLI prints ``str(error)`` on one line and exits with ``exit_code``;
    no traceback is shown.
    """

    exit_code = 2
