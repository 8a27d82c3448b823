"""The one error type of the data pipeline: a one-line message that names the culprit."""


class DataError(ValueError):
    """Bad data or a bad `spec.data` value; the CLI prints the message alone and exits."""
