"""The README against the repository: every command line it shows for infer.py and train.py is one their
parsers accept, and its file tree lists every file of the checkout, one line each, and nothing else.

Oracles: argparse itself (the parsers the CLIs run) and `git ls-files` (what the checkout holds).
"""
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import infer
import train

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _shell_blocks() -> list[str]:
    """The README's ```bash blocks, continuation lines joined."""
    return [b.replace("\\\n", " ") for b in re.findall(r"```bash\n(.*?)```", README, flags=re.S)]


def _command_lines():
    """(program, argv) for each `python infer.py ...` / `python train.py ...` line, the comment cut off."""
    for block in _shell_blocks():
        for line in block.splitlines():
            line = line.split(" # ")[0].split("\t#")[0]
            m = re.search(r"\b(infer|train)\.py\b(.*)", line)
            if m and re.search(r"\b(python|torchrun)\b", line):
                yield m.group(1), m.group(2)


def _parser(program: str):
    return infer.build_parser() if program == "infer" else train.build_parser()


def _subcommand_options(program: str) -> dict[str, set[str]]:
    parser = _parser(program)
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    return {name: {o for a in p._actions for o in a.option_strings} for name, p in sub.choices.items()}


def _argv(program: str, text: str) -> list[str]:
    argv = shlex.split(text)
    if program == "train" and (not argv or argv[0].startswith("-")):
        argv = ["recipe", *argv]  # as train.main does: a bare `python train.py` is the recipe
    return argv


COMMANDS = list(_command_lines())


def test_the_readme_shows_commands_of_both_clis():
    assert {p for p, _ in COMMANDS} == {"infer", "train"} and len(COMMANDS) > 20


@pytest.mark.parametrize("program,text", COMMANDS, ids=[f"{p}.py{t[:40]}" for p, t in COMMANDS])
def test_every_flag_the_readme_shows_is_one_the_subcommand_takes(program, text):
    """Optional groups ([--sag 8], [--mode a|b]) included: a renamed flag must not live on in the README."""
    argv = _argv(program, text.replace("[", " ").replace("]", " "))
    options = _subcommand_options(program)
    assert argv[0] in options, f"{program}.py has no subcommand {argv[0]!r}"
    unknown = [t for t in argv[1:] if t.startswith("--") and t.split("=")[0] not in options[argv[0]]]
    assert not unknown, f"{program}.py {argv[0]} does not take {unknown}"


@pytest.mark.parametrize("program,text", COMMANDS, ids=[f"{p}.py{t[:40]}" for p, t in COMMANDS])
def test_every_complete_readme_command_parses(program, text):
    """Without its optional [...] groups, a command line the README shows parses as written (required flags
    present, values of the right kind and among the choices); lines with an elided `...` are left out."""
    argv = _argv(program, re.sub(r"\[[^\]]*\]", " ", text))
    if "..." in argv:
        pytest.skip("an elided command line")
    try:
        _parser(program).parse_args(argv)
    except SystemExit as stop:  # --help exits 0 once it has printed; a usage error exits 2
        assert stop.code == 0 and "--help" in argv, f"{program}.py {' '.join(argv)}: usage error"


def test_the_file_tree_lists_every_file_once_and_only_files_that_exist():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    tree = README[README.index("## Files"):].split("```")[1]
    listed = [line.split()[0] for line in tree.strip().splitlines() if line.strip()]
    assert sorted(set(files) - set(listed)) == [], "files the README's tree does not list"
    assert sorted(set(listed) - set(files)) == [], "README tree entries that are not files of the checkout"
    assert len(listed) == len(set(listed)), "a file listed twice"
