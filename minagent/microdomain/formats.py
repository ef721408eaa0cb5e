"""The prompt formats of the evaluation's non-agent systems, and the agent's system prompt for a product.

  closed-book  the question alone -> the answer (base, CPT-only)
  rag          the top-k passages retrieved with the question, then the question -> the answer (base + RAG:
               one retrieval, no second hop — what the agent's own searches are compared against)
  cot          the question -> "Thought: ... Answer: X" (the CoT-distillation baseline, closed-book)
  agent        the ReAct/CodeAct loop of minagent.agent with the search tool

The same builders make the training texts (base pretraining, CoT traces) and the evaluation prompts, so a
model is always asked in the format it was taught.
"""
from __future__ import annotations

import re

from ..agent.multiple_choice import to_letter
from ..agent.prompts import task_text

QA_SYSTEM = "Answer the question about the product with the answer only."
RAG_SYSTEM = "Answer the question about the product from the passages, with the answer only."
MULTIPLE_CHOICE_LINE = "\nThe variable choices holds the options; answer with an option's letter or its text."
COT_SYSTEM = "Answer the question about the product. Think step by step, then write 'Answer:' and the answer."


def agent_system(product: str, multiple_choice: bool = False) -> str:
    """A compact version of minagent.agent.prompts.SYSTEM: a small model's context is short."""
    text = (f"You answer questions about {product} by searching its manual with Python code.\n"
            "Each step: 'Thought:' then 'Code:' and a ```py block ending with ```<end_code>.\n"
            "Tools: search(query) returns manual passages; final_answer(answer) ends the task.\n"
            "The variable question holds the question.")
    return text + (MULTIPLE_CHOICE_LINE if multiple_choice else "")


def closed_book_messages(item: dict) -> list[dict]:
    return [{"role": "system", "content": QA_SYSTEM},
            {"role": "user", "content": task_text(item["question"], item.get("choices"))}]


def rag_messages(item: dict, passages: str) -> list[dict]:
    return [{"role": "system", "content": RAG_SYSTEM},
            {"role": "user", "content": f"Passages:\n{passages}\n\nQuestion: "
                                        f"{task_text(item['question'], item.get('choices'))}"}]


def cot_messages(item: dict) -> list[dict]:
    return [{"role": "system", "content": COT_SYSTEM},
            {"role": "user", "content": task_text(item["question"], item.get("choices"))}]


def gold_reply(item: dict) -> str:
    """What a non-agent system should reply: the letter for multiple choice (an exam may give the option's text
    as "answer" instead of a "correct" letter), else the answer."""
    if item.get("choices"):
        return item.get("correct") or to_letter(item.get("answer"), item["choices"]) or item.get("answer")
    return item["answer"]


_ANSWER = re.compile(r"answer(?:\s+is)?[*_]*\s*[:：]", re.I)  # "**Answer**:" is the marker too


def parse_reply(text: str, cot: bool = False) -> str:
    """The answer in a reply: after the last 'Answer:' / 'The answer is:' (chatty instruct models add one
    after their explanation), else — not for CoT, whose reasoning is not the answer — the first line. A marker
    with nothing after it is skipped; one later on the same line wins ("the answer: unclear. Answer: 30" is 30:
    a pattern matched to the end of the line would have swallowed the later marker). A marker in Markdown
    emphasis ("**Answer**: 30", a chat model's bold label) counts: read as text, it left the whole line (or, for
    CoT, nothing) as the answer, scored wrong."""
    text = text.strip()
    marks = list(_ANSWER.finditer(text))
    for m, after in reversed(list(zip(marks, marks[1:] + [None]))):
        found = text[m.end():after.start() if after else len(text)].strip()
        if found:
            return found.splitlines()[0].strip()
    if cot:
        return ""
    return text.splitlines()[0].strip() if text else ""
