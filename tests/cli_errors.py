"""One helper for the CLI tests: run infer.py's main and return the usage error it stopped with."""
import pytest

import infer


def infer_usage_error(capsys, argv) -> str:
    """What infer.py printed to stderr when it stopped on argv with a usage error (exit code 2)."""
    with pytest.raises(SystemExit) as stop:
        infer.main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err
