"""The one error type the CLI turns into a readable message instead of a traceback."""


class KeelError(Exception):
    """A failure the user can act on: what went wrong, and what to do about it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message
