"""The small JSON files around a tokenizer: tokenizer_config.json, special_tokens_map.json, chat_template.jinja,
generation_config.json and config.json. They name the bos/eos/pad tokens, hold the chat template and say which
ids end a generation. Every problem is reported with the file and the field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .added_tokens import AddedToken
from .errors import SpecError, TokenizerFormatError


def read_json(path: Path) -> dict:
    """A JSON object from `path`, {} when the file does not exist."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TokenizerFormatError(path, "(document)", f"invalid JSON at line {e.lineno} column {e.colno}: "
                                                       f"{e.msg}") from None
    if not isinstance(data, dict):
        raise TokenizerFormatError(path, "(document)", f"expected a JSON object, got {type(data).__name__}")
    return data


def _token_text(value, path: Path, key: str) -> str | None:
    """A special token entry: "text", {"content": "text", ...} or null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerFormatError(path, key, f"expected a string, {{'content': str}} or null, got {value!r:.60}")


def _ids(value, path: Path, key: str) -> list[int]:
    """An id field of config.json / generation_config.json: int, list of ints or null."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TokenizerFormatError(path, key, f"expected an integer or a list of integers, got {value!r:.60}")
    return list(values)


@dataclass
class TokenizerSettings:
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    chat_template: str | None = None
    add_bos_token: bool | None = None
    add_eos_token: bool | None = None
    extra_tokens: list[AddedToken] = field(default_factory=list)  # added_tokens_decoder entries
    config_bos_ids: list[int] = field(default_factory=list)  # from generation_config.json, then config.json
    config_eos_ids: list[int] = field(default_factory=list)
    config_pad_ids: list[int] = field(default_factory=list)
    directory: Path | None = None  # where these files were read, for error messages


def _chat_template(value, path: Path) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        chosen = named.get("default", next(iter(named.values()), None))
        if isinstance(chosen, str):
            return chosen
    raise TokenizerFormatError(path, "chat_template", f"expected a string or a list of {{name, template}}, "
                                                      f"got {value!r:.60}")


def read_settings(directory: Path) -> TokenizerSettings:
    s = TokenizerSettings(directory=directory)
    tmap_path = directory / "special_tokens_map.json"
    tmap = read_json(tmap_path)
    cfg_path = directory / "tokenizer_config.json"
    cfg = read_json(cfg_path)
    for key in ("bos_token", "eos_token", "pad_token"):
        if key in cfg:
            setattr(s, key, _token_text(cfg[key], cfg_path, key))
        elif key in tmap:
            setattr(s, key, _token_text(tmap[key], tmap_path, key))
    for key in ("add_bos_token", "add_eos_token"):
        if key in cfg and cfg[key] is not None:
            if not isinstance(cfg[key], bool):
                raise TokenizerFormatError(cfg_path, key, f"expected true or false, got {cfg[key]!r}")
            setattr(s, key, cfg[key])
    jinja = directory / "chat_template.jinja"  # recent transformers write the template to its own file
    s.chat_template = jinja.read_text(encoding="utf-8") if jinja.is_file() \
        else _chat_template(cfg.get("chat_template"), cfg_path)
    decoder = cfg.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise TokenizerFormatError(cfg_path, "added_tokens_decoder", "expected an object id -> token")
    for key, item in decoder.items():
        where = f"added_tokens_decoder.{key}"
        if not isinstance(item, dict) or not str(key).isdigit():
            raise TokenizerFormatError(cfg_path, where, "expected {'content': ...} under an integer id")
        try:
            s.extra_tokens.append(AddedToken.from_json({**item, "id": int(key)}, where))
        except SpecError as e:
            raise TokenizerFormatError(cfg_path, e.field, e.problem) from None
    for name in ("generation_config.json", "config.json"):
        path = directory / name
        data = read_json(path)
        s.config_bos_ids += _ids(data.get("bos_token_id"), path, "bos_token_id")
        s.config_eos_ids += _ids(data.get("eos_token_id"), path, "eos_token_id")
        s.config_pad_ids += _ids(data.get("pad_token_id"), path, "pad_token_id")
    return s
