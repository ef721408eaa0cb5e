"""Tag scanning of html_text: a "<" that no ">" follows must not make the scan explode. Oracle: html.parser (the
text test_retrieval_docs_html's _OracleText collects) and a wall-clock bound in a subprocess (the scan used to try
exponentially many ways to split "x=12 x=12 ..." between attribute values and names before giving up: 7 s for 16
of them, 3x more for each one after)."""
import subprocess
import sys

import pytest

from test_retrieval_docs_html import oracle


def _squeeze(s):
    return "".join(s.replace("|", "").split())


def test_an_unclosed_tag_with_many_attributes_is_read_in_linear_time():
    page = "<p>Compare:</p><pre>if a<b then " + "x=12 " * 40 + "</pre"   # no ">" after the "<b"
    code = ("from minagent.retrieval.html_text import html_to_text; import sys; "
            f"sys.stdout.write(html_to_text({page!r})[1])")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("html_to_text ran past 20 s on a 240-character page")
    assert _squeeze(done.stdout) == _squeeze("".join(oracle(page).parts))
