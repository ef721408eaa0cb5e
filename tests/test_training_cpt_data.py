"""CPT corpora as users hand them over: one EOS between documents whatever the tokenizer adds itself (transformers'
tokenizer as the oracle), a single manual file as --data, non-UTF-8 and empty files, BOM / CRLF / blank lines
and a last line without newline in a {"text"} JSONL."""
import json
import shutil

import pytest
import transformers

from minagent.tokenizer import load_tokenizer
from minagent.training.cpt_data import TextDocument, read_cpt_documents, tokenize_corpus
from minagent.training.errors import TrainingDataError
from minagent.training.packing import IGNORE, pack_stream
from training_tiny import MANUALS

DOCS = [TextDocument("a", "git log shows the commit logs."), TextDocument("b", "git stash saves your changes.")]


def _eos_appending_tokenizer(tiny_dir, out):
    """The tiny checkpoint's tokenizer with a post-processor that appends <|im_end|> (its EOS), as tokenizers
    configured with add_eos_token do."""
    shutil.copytree(tiny_dir, out)
    spec = json.loads((out / "tokenizer.json").read_text())
    eos = next(t["id"] for t in spec["added_tokens"] if t["content"] == "<|im_end|>")
    seq, tok = {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|im_end|>", "type_id": 0}}
    spec["post_processor"] = {"type": "TemplateProcessing", "single": [seq, tok], "pair": [seq, tok],
                              "special_tokens": {"<|im_end|>": {"id": "<|im_end|>", "ids": [eos],
                                                                "tokens": ["<|im_end|>"]}}}
    (out / "tokenizer.json").write_text(json.dumps(spec))
    return out


@pytest.mark.parametrize("appends_eos", [False, True])
def test_each_document_ends_in_exactly_one_eos(tiny_dir, tmp_path, appends_eos):
    """A tokenizer whose template already ends every encoding in EOS got a second one appended (EOS -> EOS was
    then a trained target). Oracle: transformers' encoding of each document, plus EOS where it has none."""
    directory = _eos_appending_tokenizer(tiny_dir, tmp_path / "tok") if appends_eos else tiny_dir
    hf = transformers.AutoTokenizer.from_pretrained(str(directory))
    want = []
    for d in DOCS:
        ids = hf(d.text)["input_ids"]
        assert (ids[-1] == hf.eos_token_id) == appends_eos
        want += ids if appends_eos else ids + [hf.eos_token_id]
    stream, owner = tokenize_corpus(DOCS, load_tokenizer(directory), directory, tmp_path / "cache",
                                    log=lambda *_: None)
    assert stream.tolist() == want
    rows = pack_stream(stream, owner, 8, pad_id=0)
    eos = hf.eos_token_id
    trained = rows.targets != IGNORE
    assert not ((rows.tokens == eos) & (rows.targets == eos) & trained).any()  # never EOS -> EOS
    assert int(((rows.targets == eos) & trained).sum()) == len(DOCS)  # each document learns its end once


def test_cached_streams_from_before_the_eos_fix_are_not_reused(tiny_dir, tmp_path):
    """The cache key carries a version: a stream tokenised with the doubled EOS must not come back from disk."""
    from minagent.training import cpt_data

    directory = _eos_appending_tokenizer(tiny_dir, tmp_path / "tok")
    tok = load_tokenizer(directory)
    key_now = cpt_data._cache_key(DOCS, directory, {"eos": tok.eos_token_id, "add_special_tokens": True})
    old = cpt_data.CACHE_VERSION
    try:
        cpt_data.CACHE_VERSION = 1
        key_before = cpt_data._cache_key(DOCS, directory, {"eos": tok.eos_token_id, "add_special_tokens": True})
    finally:
        cpt_data.CACHE_VERSION = old
    assert key_now != key_before


@pytest.mark.parametrize("name", ["git-log.txt", "git-stash.md", "git-branch.html"])
def test_a_single_manual_file_is_one_document(tmp_path, name):
    """--data pointing at one manual was read as JSONL and failed with 'line 1: not valid JSON'. It is read as the
    same file inside a manuals directory is."""
    (tmp_path / "one").mkdir()
    shutil.copyfile(MANUALS / name, tmp_path / "one" / name)
    want = read_cpt_documents(tmp_path / "one")
    got = read_cpt_documents(MANUALS / name)
    assert [(d.source, d.text) for d in got] == [(d.source, d.text) for d in want] and len(got) == 1


def test_bad_manual_files_name_the_file(tmp_path):
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 au lait\n")
    for corpus in (tmp_path, tmp_path / "latin1.txt"):  # in a directory or given alone
        with pytest.raises(ValueError, match=r"latin1\.txt: not valid UTF-8 \(line 1, byte offset 3"):
            read_cpt_documents(corpus)
    (tmp_path / "empty.md").write_text("\n  \n")
    with pytest.raises(TrainingDataError, match=r"empty\.md: the file is empty"):
        read_cpt_documents(tmp_path / "empty.md")
    (tmp_path / "latin1.txt").unlink()
    (tmp_path / "ok.txt").write_bytes(b"\xef\xbb\xbfline one\r\nline two")  # BOM, CRLF: read as plain lines
    assert [(d.source, d.text) for d in read_cpt_documents(tmp_path)] == [("ok.txt", "line one\nline two")]


def test_text_jsonl_with_bom_crlf_blank_lines_and_no_final_newline(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "first"}\r\n\r\n{"text": "  "}\r\n{"text": "second"}')
    docs = read_cpt_documents(path)
    assert [(d.source, d.text) for d in docs] == [(f"{path}:1", "first"), (f"{path}:4", "second")]
    path.write_bytes(b'{"text": "first"}\n{"text": 5}\n')
    with pytest.raises(TrainingDataError, match=r'c\.jsonl:2: expected an object with a string field "text"'):
        read_cpt_documents(path)
    path.write_bytes(b"")
    with pytest.raises(TrainingDataError, match=r"c\.jsonl: no non-empty \{\"text\": \.\.\.\} lines"):
        read_cpt_documents(path)
