"""The agent's prompts: system prompt (tools + step format), task text, the forced-answer and extractor prompts.

The system prompt is what the trajectories are recorded with, so a student trained on them sees the same one.
"""
from __future__ import annotations

SYSTEM = """You are an expert assistant who answers questions about a product by searching its manuals and running Python code.
Work in steps. In each step write:
Thought: what you know so far and what to do next
Code:
```py
# python code
```<end_code>
What the code prints is shown back to you as the Observation of that step; variables persist between steps.
Tools you can call inside the code:
- search(query: str, k: int = 3) -> str: the k manual passages that best match the query (title, source and text)
- final_answer(answer): ends the task with this answer

Example:
Thought: I will look up how to list branches.
Code:
```py
print(search("list branches"))
```<end_code>
Observation: ...
Thought: The manual says `git branch` lists branches.
Code:
```py
final_answer("git branch")
```<end_code>

Rules: always write a 'Code:' block ending with '```<end_code>'; print what you need to see; call final_answer when you know the answer; answer in as few words as possible."""

# The same prompt for an agent without a search tool (`infer.py ... --no-search`): a model told it can search
# when it cannot writes steps that only fail with NameError.
SYSTEM_NO_SEARCH = (SYSTEM.replace("by searching its manuals and running Python code", "by running Python code")
                    .replace("- search(query: str, k: int = 3) -> str: the k manual passages that best match the query "
                             "(title, source and text)\n", "")
                    .replace("I will look up how to list branches.\nCode:\n```py\nprint(search(\"list branches\"))",
                             "I will compute the size in MiB.\nCode:\n```py\nprint(3 * 1024 / 1024)")
                    .replace("The manual says `git branch` lists branches.", "It is 3 MiB.")
                    .replace('final_answer("git branch")', 'final_answer("3 MiB")'))

MULTIPLE_CHOICE_RULE = "\nThis is a multiple-choice question: call final_answer with the letter of the correct option only (A, B, C or D)."

FORCED_ANSWER = ("You have used all your steps. Using what you found above, answer the question now. "
                 "Reply with one line:\nFinal answer: <your answer>")

EXTRACTOR_SYSTEM = ("You extract evidence. Given a question and retrieved passages, copy the few sentences from the "
                    "passages that help answer the question, word for word, one per line. If none helps, reply "
                    "'No relevant text.'")

COT_SYSTEM = "You are an expert assistant. Think step by step, then give the answer."


def task_text(question: str, choices: dict | None = None) -> str:
    if not choices:
        return question
    options = "\n".join(f"{k}. {v}" for k, v in sorted(choices.items()))
    return f"{question}\n\nOptions:\n{options}"


def system_prompt(multiple_choice: bool = False, search: bool = True) -> str:
    return (SYSTEM if search else SYSTEM_NO_SEARCH) + (MULTIPLE_CHOICE_RULE if multiple_choice else "")
