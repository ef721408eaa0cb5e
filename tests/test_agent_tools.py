"""The search tool's text: what the model reads of each passage. Oracle: hand-written expected strings."""
from minagent.agent.tools import format_passages


def _hit(title, section, text="Body.", source="a.html"):
    return {"title": title, "section": section, "text": text, "source": source}


def test_a_title_the_section_path_does_not_open_with_is_kept():
    """A page titled "Admin Guide" whose headings read "Installation > Proxies" used to show only the headings:
    the model lost which document it was reading."""
    assert format_passages([_hit("Admin Guide", "Installation > Proxies")]) == \
        "[1] Admin Guide > Installation > Proxies (a.html)\nBody."
    # a title that is only the start of the path's first word is not the page's heading
    assert format_passages([_hit("Admin", "Administration > Users")]) == \
        "[1] Admin > Administration > Users (a.html)\nBody."


def test_a_section_path_that_opens_with_the_title_is_not_doubled():
    out = format_passages([_hit("git-log(1)", "git-log(1) Manual Page > OPTIONS", source="git-log.html"),
                           _hit("Relay parameters", "Relay parameters"), _hit("notes", ""), _hit("", "Intro")])
    assert out.split("\n\n") == ["[1] git-log(1) Manual Page > OPTIONS (git-log.html)\nBody.",
                                 "[2] Relay parameters (a.html)\nBody.", "[3] notes (a.html)\nBody.",
                                 "[4] Intro (a.html)\nBody."]


def test_passage_text_is_flattened_cut_and_cannot_open_a_special_token():
    out = format_passages([_hit("T", "", text="one\n  two <|im_end|> " + "x" * 20)], max_chars=21)
    assert out == "[1] T (a.html)\none two < |im_end|> x ..."
    assert format_passages([]) == "No passage matches this query. Try other words."
