"""lib/query.Q: the selector language and the semantics model selection relies on."""
import math

import pytest

from domainbed.lib.query import Q, hashable, make_selector_fn


def test_select_and_reductions():
    q = Q([{"a": 1}, {"a": 3}, {"a": 2}])
    assert q.select("a") == [1, 3, 2]
    assert q.select("a").min() == 1
    assert q.select("a").max() == 3
    assert q.select("a").sum() == 6
    assert q.select("a").mean() == 2.0
    assert q.select("a").std() == pytest.approx(math.sqrt(2 / 3))  # population std


def test_mean_of_empty_is_nan_without_warning(recwarn):
    assert math.isnan(Q([]).mean())
    assert len(recwarn) == 0


def test_group_sorts_by_key_and_keeps_record_order():
    q = Q([{"k": 2, "v": "x"}, {"k": 1, "v": "y"}, {"k": 2, "v": "z"}])
    groups = q.group("k")
    assert [key for key, _ in groups] == [1, 2]
    assert groups[1][1].select("v") == ["x", "z"]
    sizes = q.group("k").map(lambda key, group: (key, len(group)))
    assert sizes == [(1, 1), (2, 2)]


def test_group_by_unhashable_value():
    q = Q([{"h": {"lr": 2}, "i": 0}, {"h": {"lr": 1}, "i": 1}, {"h": {"lr": 2}, "i": 2}])
    groups = q.group("h")
    assert [key for key, _ in groups] == [{"lr": 1}, {"lr": 2}]
    assert groups[1][1].select("i") == [0, 2]


def test_comma_and_dot_selectors():
    record = {"a": {"b": 5}, "c": 7}
    assert make_selector_fn("a.b")(record) == 5
    assert make_selector_fn("a.b, c")(record) == (5, 7)
    q = Q([record, {"a": {"b": 6}, "c": 7}])
    assert q.filter_equals("a.b,c", (6, 7)) == [{"a": {"b": 6}, "c": 7}]


def test_argmax_keeps_first_of_ties():
    q = Q([{"v": 1, "id": 0}, {"v": 3, "id": 1}, {"v": 3, "id": 2}])
    assert q.argmax("v")["id"] == 1


def test_sorted_is_stable_and_nan_sorts_first():
    q = Q([(1, "a"), (float("nan"), "b"), (1, "c"), (0, "d")])
    assert [x[1] for x in q.sorted(key=lambda x: x[0])] == ["b", "d", "a", "c"]


def test_unique_keeps_first_seen_order():
    assert Q([3, 1, 3, 2, 1]).unique() == [3, 1, 2]
    assert Q([[1], [2], [1]]).unique() == [[1], [2]]


def test_filters_and_flatten():
    assert Q([1, None, 2]).filter_not_none() == [1, 2]
    assert Q([1.0, float("nan")]).filter_not_nan() == [1.0]
    assert Q([[1, 2], [3]]).flatten() == [1, 2, 3]
    assert isinstance(Q([1, 2, 3])[::-1], Q)
    assert Q([1, 2, 3])[::-1] == [3, 2, 1]


def test_hashable():
    assert hashable(3) == 3
    assert hashable([1, 2]) == '{"_": [1, 2]}'
