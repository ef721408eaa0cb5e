"""The `post_processor` section of tokenizer.json: which special ids `add_special_tokens=True` adds.

Llama-3 prepends <|begin_of_text|> through TemplateProcessing; Qwen2.5 and SmolLM2 add nothing (ByteLevel or an
empty template). Only the single-sequence case is needed for a causal LM.
"""
from __future__ import annotations

from typing import Callable
from .errors import SpecError

PostProcessor = Callable[[list[int]], list[int]]


def _template(spec: dict, where: str) -> PostProcessor:
    specials = spec.get("special_tokens", {})
    prefix: list[int] = []
    suffix: list[int] = []
    seen_sequence = False
    for i, item in enumerate(spec.get("single", [])):
        if "Sequence" in item:
            seen_sequence = True
        elif "SpecialToken" in item:
            name = item["SpecialToken"]["id"]
            if name not in specials:
                raise SpecError(f"{where}.single[{i}]", f"special token {name!r} missing from {where}.special_tokens")
            (suffix if seen_sequence else prefix).extend(int(x) for x in specials[name]["ids"])
        else:
            raise SpecError(f"{where}.single[{i}]", f"expected Sequence or SpecialToken, got {item!r:.60}")
    return lambda ids: prefix + ids + suffix


def build_postprocessor(spec: dict | None, where: str = "post_processor") -> PostProcessor:
    if spec is None:
        return lambda ids: ids
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpecError(where, f"expected an object with a 'type', got {spec!r:.80}")
    kind = spec["type"]
    if kind == "ByteLevel":  # only adjusts offsets
        return lambda ids: ids
    if kind == "TemplateProcessing":
        return _template(spec, where)
    if kind in ("RobertaProcessing", "BertProcessing"):
        cls_id, sep_id = int(spec["cls"][1]), int(spec["sep"][1])
        return lambda ids: [cls_id] + ids + [sep_id]
    if kind == "Sequence":
        steps = [build_postprocessor(s, f"{where}.processors[{i}]") for i, s in enumerate(spec["processors"])]

        def run_all(ids: list[int]) -> list[int]:
            for step in steps:
                ids = step(ids)
            return ids
        return run_all
    raise SpecError(f"{where}.type", f"unsupported post-processor {kind!r} "
                     "(supported: ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing, Sequence)")
