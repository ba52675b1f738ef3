"""lib.misc against upstream's documented fixtures (interface doc §0)."""
import io
import json
import sys

import numpy as np
import pytest

from domainbed.lib import misc


@pytest.mark.parametrize("args, expected", [
    (("VLCS", "ERM", [1, 2], 1, 0), 360234358),
    ((0, 0), 894182419), ((1, 0), 785910682), ((0, 1), 1514274641), ((1, 1), 1442673865),
    ((2, 0), 472130416), ((0, 2), 1325548499), ((0, 3), 1796103049),
])
def test_seed_hash_fixtures(args, expected):
    assert misc.seed_hash(*args) == expected


def test_seed_hash_is_type_sensitive():
    assert misc.seed_hash("VLCS", "ERM", (1, 2), 1, 0) != misc.seed_hash("VLCS", "ERM", [1, 2], 1, 0)


def test_split_dataset_permutation_fixture():
    data = list(range(10))
    first, rest = misc.split_dataset(data, 3, seed=894182419)
    order = [first[i] for i in range(len(first))] + [rest[i] for i in range(len(rest))]
    assert order == [2, 3, 8, 1, 4, 5, 0, 9, 6, 7]
    assert len(first) == 3 and len(rest) == 7


def test_split_dataset_refuses_too_many():
    with pytest.raises(AssertionError):
        misc.split_dataset([1, 2], 3)


def test_balanced_weights():
    dataset = [(0, 0), (0, 0), (0, 0), (0, 1), (0, 1), (0, 2)]
    w = misc.make_weights_for_balanced_classes(dataset)
    assert abs(float(w.sum()) - 1.0) < 1e-6
    assert w[0] == w[1] == w[2] and w[3] == w[4]
    assert abs(float(w[0]) * 3 - float(w[5])) < 1e-6


def test_print_row_text_and_latex(capsys):
    misc.print_row(["C1", "C2"], colwidth=10)
    misc.print_row(["R1", 0.5], colwidth=10, latex=True)
    text, latex = capsys.readouterr().out.splitlines()
    assert text == "C1" + " " * 8 + "  " + "C2" + " " * 8 + " "
    assert latex == "R1" + " " * 8 + " & " + "0.50000000" + " \\\\"


def test_format_cell_truncates_floats():
    assert misc.format_cell(10.335689045123, 12) == "10.335689045"
    assert misc.format_cell(3, 12) == "3" + " " * 11


def test_to_native_makes_json_safe():
    value = {"a": np.int64(3), "b": [np.float64(0.5), np.bool_(True)]}
    assert json.dumps(misc.to_native(value)) == '{"a": 3, "b": [0.5, true]}'


def test_tee_writes_both(tmp_path, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    tee = misc.Tee(str(tmp_path / "out.txt"))
    tee.write("hello\n")
    tee.close()
    assert stream.getvalue() == "hello\n"
    assert (tmp_path / "out.txt").read_text() == "hello\n"


def test_did_you_mean():
    assert "FGMix" in misc.did_you_mean("FGmix", ["ERM", "FGMix"])
    assert misc.did_you_mean("zzz", ["ERM"]) == ""


def test_append_json_line_is_whole_and_sorted(tmp_path):
    path = tmp_path / "r.jsonl"
    misc.append_json_line(path, {"b": np.int64(1), "a": 2})
    misc.append_json_line(path, {"c": 3})
    lines = path.read_text().splitlines()
    assert lines == ['{"a": 2, "b": 1}', '{"c": 3}']


def test_tee_keep_going_drops_a_failing_file_and_copies_into_another(tmp_path):
    console = io.StringIO()
    out = misc.Tee(str(tmp_path / "out.txt"), console=console, keep_going=True)
    err = misc.Tee(str(tmp_path / "err.txt"), console=console, also=out, keep_going=True)
    err.write("to both\n")
    err.log_only("files only\n")

    def full_disk(message):
        raise OSError(28, "No space left on device")
    err.file.write = full_disk
    err.write("console and out.txt\n")   # no exception: err.txt is dropped
    assert err.file is None
    for tee in (err, out):
        tee.close()
    assert console.getvalue() == "to both\nconsole and out.txt\n"
    assert (tmp_path / "err.txt").read_text() == "to both\nfiles only\n"
    assert (tmp_path / "out.txt").read_text() == "to both\nfiles only\nconsole and out.txt\n"
    with pytest.raises(OSError):   # upstream's Tee (collect_results): errors raise
        misc.Tee(str(tmp_path / "missing" / "x.txt"))
