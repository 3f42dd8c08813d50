"""Cluster etiquette options: checked with errors naming the option; what Client.submit receives."""

from __future__ import annotations

from typing import Any

import pytest

from dask_reservoir._core.etiquette import SUBMIT_KEYS, Placement, check_etiquette

GOOD: dict[str, Any] = {
    "resources": None,
    "priority": 0,
    "workers": None,
    "allow_other_workers": False,
    "annotations": None,
}


def check(**given: Any) -> Placement:
    return check_etiquette({**GOOD, **given})


def test_defaults_submit_with_priority_zero_only() -> None:
    p = check()
    assert p == Placement() and p.submit_kwargs() == {"priority": 0} and p.annotations == {}


def test_every_option_reaches_submit() -> None:
    p = check(resources={"GPU": 2, "MEM": 0.5}, priority=-3, workers=["b", "a"], allow_other_workers=True)
    assert p.submit_kwargs() == {
        "priority": -3,
        "resources": {"GPU": 2.0, "MEM": 0.5},
        "workers": ["b", "a"],  # the order given
        "allow_other_workers": True,
    }
    assert check(workers="tcp://x:1").submit_kwargs()["workers"] == ["tcp://x:1"]
    assert check(workers={"b", "a"}).workers == ("a", "b")
    assert check(annotations={"team": "vision"}).annotations == {"team": "vision"}
    assert check(priority=5).priority == 5
    assert (
        check(priority=2**31 - 1).priority == 2**31 - 1
        and check(priority=-(2**31) + 1).priority == -(2**31) + 1
    )


@pytest.mark.parametrize(
    "given, error, message",
    [
        ({"resources": ["GPU"]}, TypeError, r"^resources must be a dict or None, got list: \['GPU'\]$"),
        (
            {"resources": {}},
            ValueError,
            r"^resources must map resource names to finite amounts > 0, got \{\}$",
        ),
        ({"resources": {"GPU": 0}}, ValueError, r"amounts > 0, got \{'GPU': 0\}$"),
        ({"resources": {"GPU": -1.0}}, ValueError, r"amounts > 0"),
        ({"resources": {"GPU": True}}, ValueError, r"amounts > 0"),
        ({"resources": {"GPU": "1"}}, ValueError, r"amounts > 0"),
        ({"resources": {1: 1}}, ValueError, r"amounts > 0"),
        ({"resources": {"CPU": float("inf")}}, ValueError, r"finite amounts > 0, got \{'CPU': inf\}$"),
        ({"resources": {"CPU": float("nan")}}, ValueError, r"finite amounts > 0"),
        (
            {"priority": 2**31},
            ValueError,
            r"^priority must be between -2147483647 and 2147483647, got 2147483648$",
        ),
        ({"priority": -(2**70)}, ValueError, r"^priority must be between"),
        ({"priority": 1.0}, TypeError, r"^priority must be an int, got float: 1.0$"),
        ({"priority": True}, TypeError, r"^priority must be an int, got bool: True$"),
        ({"workers": 3}, TypeError, r"^workers must be a str, a list of str or None, got 3$"),
        ({"workers": ["a", 3]}, TypeError, r"got \['a', 3\]$"),
        ({"workers": []}, ValueError, r"^workers must name at least one worker"),
        ({"workers": ""}, ValueError, r"and no empty name, got ''$"),
        ({"workers": " "}, ValueError, r"and no empty name, got ' '$"),
        ({"workers": ["tcp://a:1", ""]}, ValueError, r"and no empty name, got \['tcp://a:1', ''\]$"),
        ({"allow_other_workers": 1}, TypeError, r"^allow_other_workers must be a bool, got int: 1$"),
        ({"allow_other_workers": True}, ValueError, r"^allow_other_workers=True needs workers="),
        ({"annotations": [1]}, TypeError, r"^annotations must be a dict with str keys or None, got \[1\]$"),
        ({"annotations": {1: "x"}}, TypeError, r"str keys"),
        (
            {"annotations": {"retries": 2, "team": "x"}},
            ValueError,
            r"^annotations must not set \['retries'\]",
        ),
    ],
)
def test_bad_options_name_the_rule_and_the_value(given: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        check(**given)


def test_every_submit_key_is_refused_as_an_annotation() -> None:
    for key in SUBMIT_KEYS:
        with pytest.raises(ValueError, match=rf"annotations must not set \['{key}'\]: use the options"):
            check(annotations={key: 1})
    assert set(SUBMIT_KEYS) == {"priority", "resources", "workers", "allow_other_workers", "retries"}
