"""Context-answer extractor (the microdomain paper's "contextual answer extractor"): a pass that, given the
question and long retrieved passages, keeps only the sentences that bear on it, so a small model's short
attention is spent on evidence rather than on whole manual pages.

It wraps the search tool: what the agent's code gets back from search() is the extract, not the raw passages.
The same model can do it (in its own KV-cache session, so the agent's conversation stays cached) or a second
one. Off by default; on with `infer.py exam --extractor` for the ablation.
"""
from __future__ import annotations

import inspect

from .prompts import EXTRACTOR_SYSTEM


class ContextExtractor:
    def __init__(self, llm, min_chars: int = 600, max_tokens: int = 256):
        self.llm, self.min_chars, self.max_tokens = llm, min_chars, max_tokens
        self.calls = 0

    def extract(self, question: str, passages: str) -> str:
        if len(passages) < self.min_chars:  # short enough to read as is
            return passages
        self.calls += 1
        messages = [{"role": "system", "content": EXTRACTOR_SYSTEM},
                    {"role": "user", "content": f"Question: {question}\n\nPassages:\n{passages}"}]
        text = self.llm.complete(messages, max_tokens=self.max_tokens, session="extractor")[0].strip()
        return f"Relevant text from the passages:\n{text}" if text else passages

    def wrap(self, search, question: str):
        def search_extracted(*args, **kwargs) -> str:
            """search with the extract in place of the passages; its arguments go to the tool as given, so its
            own defaults (k) and parameter names (search(q=...)) hold as without the extractor."""
            return self.extract(question, search(*args, **kwargs))
        try:  # the tool's own signature, so the tool cache binds search('q') and search('q', its default k) alike
            search_extracted.__signature__ = inspect.signature(search)
        except (TypeError, ValueError):
            pass
        return search_extracted
