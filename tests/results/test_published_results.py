"""The published 2020 numbers are data (`domainbed/results/published_2020.csv`): every cell
parses, known cells hold their published values, and, where the interface document is
present, every cell equals its section 10 tables."""
import configparser
import fnmatch
import math
import os
import re

import pytest

from domainbed.results import published
import support

REPO_ROOT = str(support.REPO_ROOT)
INTERFACE_DOC = os.path.join(REPO_ROOT, os.pardir, "shared", "reference", "domainbed-interface.md")
METHODS = ("training-domain validation set", "leave-one-domain-out cross-validation",
           "test-domain validation set (oracle)")
DATASETS = ("ColoredMNIST", "RotatedMNIST", "VLCS", "PACS", "OfficeHome", "TerraIncognita",
            "DomainNet")


def test_every_table_and_cell_parses():
    tables = published.load_published()
    assert list(tables) == [(method, table) for method in METHODS
                            for table in DATASETS + ("Averages",)]
    columns = {"Averages": DATASETS}   # a dataset's environments, the same in every method
    for (method, table), entry in tables.items():
        assert entry["columns"] == columns.setdefault(table, entry["columns"])
        assert 9 <= len(entry["rows"]) <= 14
        for algorithm, (cells, average) in entry["rows"].items():
            assert len(cells) == len(entry["columns"]), (method, table, algorithm)
            for mean, err in cells:
                assert 0 <= mean <= 100 and 0 <= err <= 50
            assert 0 <= average <= 100
            # The Avg column is the mean of the row's cells, to the published rounding.
            assert average == pytest.approx(sum(m for m, _ in cells) / len(cells), abs=0.151)


def test_known_published_cells():
    table = published.PUBLISHED[("training-domain validation set", "RotatedMNIST")]
    assert table["columns"] == ("0", "15", "30", "45", "60", "75")
    assert table["rows"]["ERM"][1] == 98.0          # Avg
    assert table["rows"]["MLDG"][1] == 97.9
    assert table["rows"]["ERM"][0][0] == (95.9, 0.1)
    assert published.published("training-domain validation set", "VLCS", "ERM") == (
        {"C": (97.7, 0.4), "L": (64.3, 0.9), "S": (73.4, 0.5), "V": (74.6, 1.3)}, 77.5)
    averages, avg = published.published("training-domain validation set", "Averages", "ERM")
    assert averages["RotatedMNIST"] == (98.0, 0.0) and avg == 66.6
    oracle, _ = published.published("test-domain validation set (oracle)", "Averages", "MMD")
    assert oracle["DomainNet"] == (23.5, 9.4)
    assert published.published("training-domain validation set", "DomainNet", "Fish") is None
    assert published.published("training-domain validation set", "Debug28", "ERM") is None


def doc_tables(text):
    """{(method, table): {'columns', 'rows'}} of the document's `#### method — table`
    Markdown tables, in PUBLISHED's shape."""
    tables = {}
    for match in re.finditer(r"^#### (.+) — (\w+)\n\n((?:\|.*\n)+)", text, re.M):
        method, table, body = match.groups()
        header, _, *rows = body.strip().split("\n")
        columns = tuple(c.strip() for c in header.strip("|").split("|"))[1:-1]
        parsed = {}
        for row in rows:
            algorithm, *cells, average = (c.strip() for c in row.strip("|").split("|"))
            parsed[algorithm] = (tuple(tuple(float(x) for x in c.split(" ± ")) for c in cells),
                                 float(average))
        tables[(method, table)] = {"columns": columns, "rows": parsed}
    return tables


def test_every_cell_equals_the_interface_document():
    if not os.path.isfile(INTERFACE_DOC):
        pytest.skip(f"{INTERFACE_DOC} is not here")
    with open(INTERFACE_DOC, encoding="utf-8") as f:
        expected = doc_tables(f.read())
    assert len(expected) == 24
    assert published.PUBLISHED == expected


def test_a_cell_that_does_not_parse_names_its_line():
    header = ",".join(published.FIELDS)
    good = "training-domain validation set,VLCS,ERM,C,97.7,0.4\n" \
           "training-domain validation set,VLCS,ERM,Avg,97.7,\n"
    assert published.parse_published(f"{header}\n{good}")[
        ("training-domain validation set", "VLCS")]["rows"]["ERM"] == (((97.7, 0.4),), 97.7)
    bad_cells = [good.replace("97.7,0.4", "97.7,x"), good.replace("97.7,0.4", "nan,0.4"),
                 good.replace(",0.4\n", "\n"), good.replace("Avg,97.7,", "Avg,97.7,0.1")]
    for text in bad_cells:
        with pytest.raises(ValueError, match=r"line [23]"):
            published.parse_published(f"{header}\n{text}")
    other_columns = good + "training-domain validation set,VLCS,IRM,L,60.0,0.1\n" \
                           "training-domain validation set,VLCS,IRM,Avg,60.0,\n"
    with pytest.raises(ValueError, match="line 5: .*IRM has columns"):
        published.parse_published(f"{header}\n{other_columns}")
    with pytest.raises(ValueError, match="header"):
        published.parse_published("method,mean\n")


def test_the_data_file_is_package_data():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO_ROOT, "setup.cfg"))
    patterns = config["options.package_data"]["domainbed.results"].split()
    assert any(fnmatch.fnmatch(published.DATA_FILE, pattern) for pattern in patterns)
    assert os.path.isfile(os.path.join(os.path.dirname(published.__file__), published.DATA_FILE))
    assert not math.isnan(published.PUBLISHED[("training-domain validation set", "PACS")]
                          ["rows"]["ERM"][1])
