"""Files a run writes whole or not at all."""

import json
import os

from flaxbench.results import write_bytes_atomic, write_json_atomic


def test_files_written_through_a_rename_get_the_modes_of_files_written_plainly(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = [write_json_atomic(tmp_path / "results.json", {"a": 1}), write_bytes_atomic(tmp_path / "b.npz", b"x")]
    for path in written:  # readable by the group and others where the umask lets plain files be
        assert os.stat(path).st_mode & 0o777 == os.stat(plain).st_mode & 0o777, path
    assert json.loads(written[0].read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz", "plain.txt", "results.json"]
