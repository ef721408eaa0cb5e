"""An index path that is a symlink (index -> data/index-v3) is rebuilt where the link points: the link stays, and
nothing is left beside it. Checked by hand on the file system (os.readlink, os.listdir), with the one-step
exchange and with the two-rename fallback."""
import os

import numpy as np
import pytest

from minagent.retrieval import store


@pytest.mark.parametrize("exchange", [True, False])
def test_a_symlinked_index_path_is_written_through_the_link(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(store, "_exchange", lambda a, b: False)
    target = tmp_path / "data" / "index-v3"
    store.write_index(str(target), {}, {"a": np.arange(3)}, {})
    link = tmp_path / "index"
    os.symlink("data/index-v3", link)
    store.write_index(str(link), {}, {"a": np.arange(5)}, {})
    assert os.readlink(link) == "data/index-v3"                       # still the link
    assert sorted(os.listdir(tmp_path)) == ["data", "index"]            # no stray temporary entry
    assert sorted(os.listdir(tmp_path / "data")) == ["index-v3"]
    assert np.load(target / "a.npy").tolist() == [0, 1, 2, 3, 4]        # the new index, where the link points
    assert store.read_manifest(str(link))["files"].keys() == {"a.npy"}
