"""The one exception type for user mistakes (bad input, bad config).

The CLI turns an ``InputError`` into one line on stderr and a non-zero exit; anything else is a bug
and keeps its traceback.
"""


class InputError(Exception):
    """Bad user input: the message names the file, row and value at fault."""


def where(path, row=None, column=None) -> str:
    """Format a location prefix like ``train.csv row 7 column 'x'``.

    ``row`` is the 1-based data row number (the header is row 0), as a user counts it in a spreadsheet.
    """
    out = str(path)
    if row is not None:
        out += f" row {row}"
    if column is not None:
        out += f" column {column!r}"
    return out
