"""The agent: a CodeAct/ReAct loop over a small model, a sandboxed Python executor with the search tool inside,
self-consistent action generation, a context-answer extractor, multiple-choice scoring and teacher trajectories.

    from minagent.agent import Agent, AgentConfig, MinagentLLM, make_search
    agent = Agent(MinagentLLM(model, tok), {"search": make_search(retriever)}, AgentConfig(max_steps=5, sag=8))
    result = agent.run("How do I undo the last commit?")
"""
from .executor import Agent, AgentConfig, RunResult
from .extractor import ContextExtractor
from .llm import HTTPChatLLM, LLMError, MinagentLLM, ScriptedLLM
from .multiple_choice import accuracy, is_correct, to_letter
from .parsing import STOP_STRINGS, parse_step
from .sandbox import ExecResult, Sandbox, SandboxError, ToolBox
from .teacher import distill, first_thought, oracle_teacher, read_questions
from .tools import make_search

__all__ = ["Agent", "AgentConfig", "RunResult", "ContextExtractor", "HTTPChatLLM", "LLMError", "MinagentLLM",
           "ScriptedLLM", "accuracy", "is_correct", "to_letter", "STOP_STRINGS", "parse_step", "ExecResult",
           "Sandbox", "SandboxError", "ToolBox", "distill", "first_thought", "oracle_teacher", "read_questions",
           "make_search"]
