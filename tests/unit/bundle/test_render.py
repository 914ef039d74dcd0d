from __future__ import annotations

import ast

import jinja2
import pytest

from mlship.bundle.render import PredictorContext, SourceBlock, make_environment, render


def context(**overrides: object) -> PredictorContext:
    values: dict[str, object] = dict(
        mlship_version="0.1.0", notebook="nb.ipynb", notebook_sha256="ab" * 32, reason="last call: m.predict(X)",
        imports=["import numpy as np"], values=[("m", "LogisticRegression"), ("COLS", "list")],
        definitions=[SourceBlock("clean", 3, "def clean(df):\n    return df[COLS]")],
        methods=[("predict", "m.predict(clean(X))"), ("predict_proba", "m.predict_proba(clean(X))")],
        input_name="X")
    values.update(overrides)
    return PredictorContext(**values)  # type: ignore[arg-type]


def test_predictor_is_valid_python_with_one_function_per_method() -> None:
    source = render("predictor.py.jinja", context())
    tree = ast.parse(source)
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert functions == ["clean", "_mlship_predict", "_mlship_predict_proba"]
    assert 'm = _mlship_values["m"]  # LogisticRegression' in source
    assert "# cell 3\ndef clean(df):" in source
    assert "METHODS = {" in source and '"predict_proba": _mlship_predict_proba,' in source


def test_predictor_without_captured_values_does_not_open_a_pickle() -> None:
    source = render("predictor.py.jinja", context(values=[], local_code=True))
    ast.parse(source)
    assert "values.pkl" not in source
    assert '/ "code"' in source


def test_environment_is_strict_about_undefined_names() -> None:
    env = make_environment()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
