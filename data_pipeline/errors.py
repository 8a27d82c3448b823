"""The one error type of the data pipeline: a one-line message that names the culprit."""


class DataError(ValueError):
    """Bad data or a bad `spec.data` value; the CLI prints the message alone and exits."""


class BadFileError(DataError):
    """A tile file that is not a readable image: `display` names it, `reason` says why."""

    def __init__(self, display: str, reason: str, remedy: str):
        super().__init__(f"bad file '{display}': {reason}; {remedy}")
        self.display, self.reason = display, reason
