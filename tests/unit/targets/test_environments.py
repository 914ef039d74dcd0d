"""Grouping a service's bundles into environments (mlship/targets/environments.py): pins in, environments out."""

from __future__ import annotations

import pytest

from mlship.targets.environments import Member, group_environments, parse_pins

RUNTIME = ["starlette==0.50.0", "uvicorn==0.38.0", "orjson==3.11.4"]


def member(label: str, *pins: str, python: str = "3.11") -> Member:
    return Member(label, python, parse_pins([*RUNTIME, *pins]))


def test_pins_are_parsed_by_canonical_name_with_spaces_dropped() -> None:
    pins = parse_pins(["Scikit_Learn == 1.8.0", "# a comment", "", "pandas[pyarrow]>=2 ; python_version>'3.9'",
                       "six==1.17.0  # trailing"])
    assert pins == {"scikit-learn": "==1.8.0", "pandas": "[pyarrow]>=2;python_version>'3.9'", "six": "==1.17.0"}
    with pytest.raises(ValueError, match="not a requirement"):
        parse_pins(["==1.0"])


def test_bundles_whose_pins_agree_share_one_environment_with_the_union_of_their_pins() -> None:
    grouping = group_environments([member("churn 0.1.0", "pandas==2.3.3", "scikit-learn==1.9.1"),
                                   member("iris 0.1.0", "scikit-learn==1.9.1"),
                                   member("text 0.1.0", "six==1.17.0")])
    (env,) = grouping.environments
    assert env.name == "env1" and env.python == "3.11"
    assert env.members == ("churn 0.1.0", "iris 0.1.0", "text 0.1.0")
    assert env.requirements() == ["orjson==3.11.4", "pandas==2.3.3", "scikit-learn==1.9.1", "six==1.17.0",
                                  "starlette==0.50.0", "uvicorn==0.38.0"]
    assert grouping.splits == ()
    assert grouping.environment_of("text 0.1.0") is env


def test_a_bundle_pinning_another_version_gets_its_own_environment_and_the_split_says_why() -> None:
    grouping = group_environments([member("fraud 1.0.0", "scikit-learn==1.8.0", "numpy==2.2.6"),
                                   member("fraud 2.0.0", "scikit-learn==1.9.1", "numpy==2.3.5"),
                                   member("churn 0.1.0", "scikit-learn==1.9.1")])
    first, second = grouping.environments
    assert first.members == ("fraud 1.0.0",) and second.members == ("fraud 2.0.0", "churn 0.1.0")
    assert first.pins["scikit-learn"] == "==1.8.0" and second.pins["scikit-learn"] == "==1.9.1"
    (split,) = grouping.splits
    assert split.member == "fraud 2.0.0" and split.environment == "env2"
    assert [c.package for _, conflicts in split.conflicts for c in conflicts] == ["numpy", "scikit-learn"]
    assert split.describe() == ("fraud 2.0.0 in env2 (env1: numpy==2.3.5 vs numpy==2.2.6 (fraud 1.0.0), "
                                "scikit-learn==1.9.1 vs scikit-learn==1.8.0 (fraud 1.0.0))")


def test_first_fit_keeps_earlier_environments_and_explains_every_one_a_bundle_could_not_join() -> None:
    grouping = group_environments([member("a 1", "six==1.16.0"), member("b 1", "six==1.17.0"),
                                   member("c 1", "six==1.15.0"), member("d 1", "six==1.17.0")])
    assert [env.members for env in grouping.environments] == [("a 1",), ("b 1", "d 1"), ("c 1",)]
    (b, c) = grouping.splits
    assert [env for env, _ in b.conflicts] == ["env1"]
    assert [env for env, _ in c.conflicts] == ["env1", "env2"]
    assert "six==1.15.0 vs six==1.17.0 (b 1)" in c.describe()
    assert grouping.placement == {"a 1": "env1", "b 1": "env2", "c 1": "env3", "d 1": "env2"}


def test_a_loose_pin_never_shares_with_a_different_spec_of_the_same_package() -> None:
    grouping = group_environments([member("a 1", "pandas==2.2.3"), member("b 1", "pandas>=2")])
    assert len(grouping.environments) == 2
    assert grouping.splits[0].describe() == "b 1 in env2 (env1: pandas>=2 vs pandas==2.2.3 (a 1))"


def test_another_python_is_another_environment_even_with_the_same_pins() -> None:
    grouping = group_environments([member("a 1"), member("b 1", python="3.12")])
    assert [env.python for env in grouping.environments] == ["3.11", "3.12"]
    assert grouping.splits[0].describe() == "b 1 in env2 (env1: Python 3.12 vs 3.11 (a 1))"


def test_a_bundle_that_pins_a_package_nobody_else_does_joins_and_adds_it() -> None:
    grouping = group_environments([member("a 1", "six==1.16.0"), member("b 1", "toolz==1.0.0"),
                                   member("c 1", "toolz==0.12.1")])
    first, second = grouping.environments
    assert first.members == ("a 1", "b 1") and first.pins["toolz"] == "==1.0.0"
    # c conflicts with b's toolz, which a never pinned: only b is named.
    assert grouping.splits[0].describe() == "c 1 in env2 (env1: toolz==0.12.1 vs toolz==1.0.0 (b 1))"
    assert second.members == ("c 1",)


def test_labels_must_be_unique() -> None:
    with pytest.raises(ValueError, match="not unique"):
        group_environments([member("a 1"), member("a 1")])
