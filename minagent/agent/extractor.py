"""Context-answer extractor (the microdomain paper's "contextual answer extractor"): a pass that, given the
question and long retrieved passages, keeps only the sentences that bear on it, so a small model's short
attention is spent on evidence rather than on whole manual pages.

It wraps the search tool: what the agent's code gets back from search() is the extract, not the raw passages.
The same model can do it (in its own KV-cache session, so the agent's conversation stays cached) or a second
one. Off by default; on with `infer.py exam --extractor` for the ablation.

The extract holds only the passages' own sentences: each sentence the model writes is snapped to the passage
sentence it copied (verbatim.py), so a small model's slip ("Default | 50" for "Default | 500") cannot put a
wrong value in front of the agent. When nothing the model wrote comes from the passages ("No relevant text.",
or text of its own), the agent gets the passages unchanged: an extract with no evidence in it would hide the
answer that was retrieved. snap=False keeps the model's text as written (the paper's plain extractor).
"""
from __future__ import annotations

import inspect

from .prompts import EXTRACTOR_SYSTEM
from .verbatim import snap_to_source


class ContextExtractor:
    def __init__(self, llm, min_chars: int = 600, max_tokens: int = 256, snap: bool = True):
        self.llm, self.min_chars, self.max_tokens, self.snap = llm, min_chars, max_tokens, snap
        self.calls = 0
        self.unchanged = 0  # calls whose extract held nothing from the passages: the agent got the passages

    def extract(self, question: str, passages: str) -> str:
        if len(passages) < self.min_chars:  # short enough to read as is
            return passages
        self.calls += 1
        messages = [{"role": "system", "content": EXTRACTOR_SYSTEM},
                    {"role": "user", "content": f"Question: {question}\n\nPassages:\n{passages}"}]
        text = self.llm.complete(messages, max_tokens=self.max_tokens, session="extractor")[0].strip()
        if self.snap:
            text = "\n".join(snap_to_source(text, passages))
        if not text:
            self.unchanged += 1
            return passages
        return f"Relevant text from the passages:\n{text}"

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
