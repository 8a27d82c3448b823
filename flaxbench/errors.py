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


def out_of_memory_message(error: BaseException) -> str | None:
    """One line for the host (MemoryError) or XLA (RESOURCE_EXHAUSTED) running out of memory; None for other errors."""
    text = str(error).strip()
    xla_out_of_memory = isinstance(error, RuntimeError) and text.startswith("RESOURCE_EXHAUSTED")
    if not (isinstance(error, MemoryError) or xla_out_of_memory):
        return None
    reason = text.splitlines()[0].rstrip(".")[:200] if text else type(error).__name__
    return (f"out of memory ({reason}); lower spec.train.batch_size or spec.train.eval_batch_size, use smaller "
            "tiles (spec.data.image_size), keep the tiles in host memory (spec.train.data_placement='host') or "
            "use a smaller model")
