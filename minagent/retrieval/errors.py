"""Errors raised by retrieval, one class per kind of bad input.

They subclass ValueError so callers that only know "bad input" can catch one thing, while the CLI and tests can
tell an empty query from a corrupt index. Every message names the file/field at fault and what was expected.
"""


class RetrievalError(ValueError):
    """Base class for every retrieval input error."""


class EmptyCorpusError(RetrievalError):
    """The corpus directory holds no readable text (no supported files, or only empty ones)."""


class EmptyQueryError(RetrievalError):
    """A query is empty or has no searchable token after analysis."""


class CorpusDecodeError(RetrievalError):
    """A corpus file is not valid UTF-8."""


class IndexFormatError(RetrievalError):
    """An index directory is missing, corrupt, or not a minagent index."""


class IndexVersionError(IndexFormatError):
    """An index was written by an incompatible version of the on-disk format."""
