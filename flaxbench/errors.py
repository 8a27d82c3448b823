"""User-facing errors: one line that names the thing and says what to do."""


class FlaxbenchError(Exception):
    """An error caused by user input; the CLI prints its message alone and exits non-zero."""


class SpecError(FlaxbenchError):
    """A spec file or spec key is wrong."""


class WeightsError(FlaxbenchError):
    """A torchvision weights file or state_dict cannot be used."""


class WorkdirError(FlaxbenchError):
    """The run directory cannot be used as asked."""


class TrainingError(FlaxbenchError):
    """Training cannot continue (e.g. non-finite loss)."""
