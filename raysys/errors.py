"""The one base class of user errors: a wrong config, archive, path or cluster size.

Every entry point prints such an error as one message (it names the file, row or key) and
exits 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the message says what and where, no traceback needed."""
