"""Errors earthsim raises for bad input; the CLI turns them into a message and exit status 2."""


class EarthsimError(Exception):
    """Bad input or configuration: the message names the file, variable or key and what was expected."""


class CatalogError(EarthsimError):
    """An unknown catalog name or a malformed catalog entry."""


class ValidationError(EarthsimError):
    """Data that does not match what its catalog entry expects."""
