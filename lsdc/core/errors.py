"""The one exception type for user mistakes (bad input, bad config).

The CLI turns an ``InputError`` into one line on stderr and a non-zero exit; anything else is a bug
and keeps its traceback.
"""


class InputError(Exception):
    """Bad user input: the message names the file, row and value at fault."""


def where(path, line=None, column=None) -> str:
    """Format a location prefix like ``train.csv line 7 column 'x'``.

    ``line`` is the 1-based line number in the file (the header is line 1), as an editor shows it.
    """
    out = str(path)
    if line is not None:
        out += f" line {line}"
    if column is not None:
        out += f" column {column!r}"
    return out
