"""The user-facing error type: the CLI prints its message and exits with code 2, never a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad path, mismatched tokenizer, corrupt checkpoint, ...)."""
