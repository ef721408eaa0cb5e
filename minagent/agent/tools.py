"""The agent's tools on the parent side: search over a retrieval index, as text the model can read.

search(query, k=3) returns a string, not objects: the code the model writes usually just prints it, and the
observation then shows the passages with their rank, title and source so the model can cite or refine.
"""
from __future__ import annotations


def _where(title, section) -> str:
    """The passage's place for the model to read: the section path, which usually opens with the page's first
    heading and so with its title ("git-log(1) Manual Page > OPTIONS" under the title "git-log(1)"); a title the
    path does not open with ("Admin Guide" over "Installation > Proxies") is put in front, not dropped."""
    title, section = title or "", section or ""
    if not section or section == title:
        return title
    opens_with_title = section.startswith(title) and section[len(title):len(title) + 1] in (" ", "")
    return section if not title or opens_with_title else f"{title} > {section}"


def format_passages(hits, max_chars: int = 1200) -> str:
    if not hits:
        return "No passage matches this query. Try other words."
    out = []
    for i, h in enumerate(hits, 1):
        get = h.get if isinstance(h, dict) else (lambda k, h=h: getattr(h, k, ""))
        # "<|im_end|>"-style markers in a manual must stay text: the prompt is encoded with special tokens parsed
        text = " ".join(str(get("text")).split()).replace("<|", "< |")
        if len(text) > max_chars:
            text = text[:max_chars] + " ..."
        where = _where(get("title"), get("section"))
        out.append(f"[{i}] {where} ({get('source')})\n{text}")
    return "\n\n".join(out)


def make_search(retriever, mode: str = "bm25", max_k: int = 10, max_chars: int = 1200, default_k: int = 3):
    """search(query, k=default_k) over a minagent.retrieval.Retriever (or anything with .search(query, k, mode))."""
    def search(query: str, k: int = default_k) -> str:
        if not isinstance(query, str) or not query.strip():
            raise ValueError("search(query) needs a non-empty string query")
        k = max(1, min(int(k), max_k))
        return format_passages(retriever.search(query, k=k, mode=mode), max_chars)
    return search
