"""Errors earthsim raises for bad input; the CLI turns them into a message and exit status 2."""

import contextlib
import logging


class EarthsimError(Exception):
    """Bad input or configuration: the message names the file, variable or key and what was expected."""


class CatalogError(EarthsimError):
    """An unknown catalog name or a malformed catalog entry."""


class ValidationError(EarthsimError):
    """Data that does not match what its catalog entry expects."""


def reason(error: BaseException, limit: int = 200) -> str:
    """One line saying why ``error`` happened, for a message of our own: its type and the first line of its text.
    For a refused ``torch.load(weights_only=True)``, the unpickler's own words (what follows "WeightsUnpickler
    error:", on that line or the next), without torch's advice to load with ``weights_only=False``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        _, marker, rest = line.partition("WeightsUnpickler error:")
        if marker:
            cause = rest.strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return f"WeightsUnpickler error: {cause}"[:limit]
    if lines and lines[0].startswith("Weights only load failed"):
        later = [line for line in lines[1:] if not line.startswith(("Check the documentation", "Please file an issue"))]
        if later:
            return later[0][:limit]
    first = lines[0] if lines else ""
    return f"{type(error).__name__}: {first}"[:limit] if first else type(error).__name__


@contextlib.contextmanager
def quiet_loggers(*names: str):
    """Silence the named loggers (``""``: the root logger) below CRITICAL within the block: third-party code that
    logs a failure with its traceback before raising (cfgrib, torch.distributed.checkpoint), when earthsim
    reports the failure in one line of its own."""
    loggers = [logging.getLogger(name or None) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
