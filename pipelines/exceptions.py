"""All errors drlake raises on purpose. User mistakes are `DrlakeError`s: the CLI prints them
as one line without a traceback; anything else is a bug and keeps its traceback."""


class DrlakeError(Exception):
    """Base class of every error caused by the user's input or environment."""


class InputError(DrlakeError):
    """An input file, table row or argument is invalid; the message names it and the problem."""


class SchemaError(DrlakeError):
    """A table does not match its schema; the message names the table, column and value."""


class LakeError(DrlakeError):
    """The lake is missing, unreadable, or in a state a stage cannot work from."""
