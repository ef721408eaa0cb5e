"""Errors raised while loading tokenizer files.

Both subclass the built-in exception a caller would naturally catch (FileNotFoundError, ValueError), and their
messages always name the file and, for bad content, the JSON field, so a user can fix the checkpoint by hand.
"""
from __future__ import annotations

from pathlib import Path


class TokenizerFileNotFoundError(FileNotFoundError):
    """No tokenizer file where one was expected."""

    def __init__(self, where: str | Path, looked_for: list[str]):
        self.where, self.looked_for = str(where), list(looked_for)
        super().__init__(f"no tokenizer found in {self.where}: looked for {', '.join(self.looked_for)}")


class TokenizerFormatError(ValueError):
    """A tokenizer file exists but its content is not what we expect (or uses a feature we do not implement)."""

    def __init__(self, file: str | Path, field: str, problem: str):
        self.file, self.field, self.problem = str(file), field, problem
        super().__init__(f"{self.file}: field '{self.field}': {problem}")


class SpecError(ValueError):
    """A problem at a JSON path inside a tokenizer file (e.g. 'model.merges[3]'); the loader adds the file."""

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


class ConversationError(ValueError):
    """Messages a chat template cannot render as given: a role it would drop or refuses, an order it forbids, a
    field it has no place for. The caller's conversation is at fault, not the tokenizer files (the server
    answers these with a 400, not a 500)."""
