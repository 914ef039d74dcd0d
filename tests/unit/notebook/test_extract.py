from __future__ import annotations

from typing import Any

import pytest

from mlship.errors import ExtractionError
from mlship.notebook.analyze import index_cells
from mlship.notebook.extract import Choices, choose, plan_code

SETUP = """
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.ensemble import RandomForestClassifier
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
y = (X["a"] > 0).astype(int)
X_train, X_test = X[:30], X[30:]
y_train = y[:30]
"""


def plan_of(run_cells: Any, *sources: str, **choices: Any) -> Any:
    cells, kernel = run_cells(SETUP, *sources)
    index = index_cells(cells)
    origin = {k: "flag" for k in choices}
    plan = choose(index, Choices(**choices, origin=origin), kernel)
    return plan, plan_code(index, plan, kernel)


def test_last_prediction_call_wins(run_cells: Any) -> None:
    plan, code = plan_of(run_cells,
                         "lr = LogisticRegression().fit(X_train, y_train)\nlr.predict(X_test)",
                         "rf = RandomForestClassifier(n_estimators=5).fit(X_train, y_train)",
                         "rf_pred = rf.predict(X_test)")
    assert plan.methods == {"predict": "rf.predict(X)", "predict_proba": "rf.predict_proba(X)",
                            "predict_log_proba": "rf.predict_log_proba(X)"}
    assert plan.sample_expr == "X_test"
    assert plan.cell == 4
    assert code.by_value == ["rf"]


def test_subscripted_probability_is_served_and_the_full_matrix_is_an_extra(run_cells: Any) -> None:
    plan, _ = plan_of(run_cells, "lr = LogisticRegression().fit(X_train, y_train)",
                      "p = lr.predict_proba(X_test)[:, 1]")
    assert plan.methods["predict"] == "lr.predict_proba(X)[:, 1]"
    assert plan.methods["predict_proba"] == "lr.predict_proba(X)"


def test_preprocessing_functions_are_emitted_as_source_with_what_they_need(run_cells: Any) -> None:
    plan, code = plan_of(
        run_cells,
        "SCALE = {'a': 2.0}\nCOLS = [c for c in 'abc']",
        "def helper(v):\n    return v * SCALE['a']",
        "def clean(df):\n    out = df[COLS].copy()\n    out['a'] = helper(out['a'])\n    return out",
        "lr = LogisticRegression().fit(clean(X_train), y_train)",
        "unused = 1\nlr.predict(clean(X_test))",
    )
    assert plan.methods["predict"] == "lr.predict(clean(X))"
    assert plan.sample_expr == "X_test"
    assert [d.name for d in code.definitions] == ["helper", "clean"]
    assert sorted(code.by_value) == ["COLS", "SCALE", "lr"]
    assert code.imports == []


def test_inference_function_with_fitted_objects_as_arguments(run_cells: Any) -> None:
    plan, code = plan_of(
        run_cells,
        "from sklearn.feature_extraction import DictVectorizer",
        "dv = DictVectorizer().fit(X_train.to_dict(orient='records'))\n"
        "model = LogisticRegression().fit(dv.transform(X_train.to_dict(orient='records')), y_train)",
        "def predict(df, dv, model):\n    X = dv.transform(df.to_dict(orient='records'))\n    return model.predict(X)",
        "y_pred = predict(X_test, dv, model)",
    )
    assert plan.methods == {"predict": "predict(X, dv, model)"}
    assert [d.name for d in code.definitions] == ["predict"]
    assert sorted(code.by_value) == ["dv", "model"]


def test_fitted_transformer_and_comprehension_wrappers_are_preprocessing(run_cells: Any) -> None:
    plan, _ = plan_of(
        run_cells,
        "from sklearn.feature_extraction.text import TfidfVectorizer\n"
        "texts = ['good thing', 'bad thing', 'good stuff', 'bad stuff']\nlabels = [1, 0, 1, 0]\n"
        "vec = TfidfVectorizer().fit(texts)\nclf = LogisticRegression().fit(vec.transform(texts), labels)",
        "def norm(t):\n    return t.lower()",
        "clf.predict(vec.transform([norm(t) for t in ['Good day', 'Bad day']]))",
    )
    assert plan.methods["predict"] == "clf.predict(vec.transform([norm(t) for t in X]))"
    assert plan.sample_expr == "['Good day', 'Bad day']"


def test_column_selection_is_the_input(run_cells: Any) -> None:
    plan, _ = plan_of(run_cells, "lr = LogisticRegression().fit(X_train[['a', 'b']].values, y_train)",
                      "lr.predict(X_test[['a', 'b']].values)")
    assert plan.methods["predict"] == "lr.predict(X.values)"
    assert plan.sample_expr == "X_test[['a', 'b']]"


def test_model_flag_with_expression(run_cells: Any) -> None:
    plan, code = plan_of(run_cells, "models = {'lr': LogisticRegression().fit(X_train, y_train)}",
                         "models['lr'].predict(X_test.head())", model="models[ 'lr' ]")
    assert plan.methods["predict"] == "models['lr'].predict(X)"
    assert plan.sample_expr == "X_test.head()"
    assert code.by_value == ["models"]
    plan, _ = plan_of(run_cells, "models = {'lr': LogisticRegression().fit(X_train, y_train)}",
                      model="models['lr']", sample="X_test")
    assert plan.methods["predict"] == "models['lr'].predict(X)" and plan.sample_expr == "X_test"


def test_predict_flag_captures_its_free_names(run_cells: Any) -> None:
    plan, code = plan_of(run_cells, "lr = LogisticRegression().fit(X_train, y_train)\nTHRESH = 0.3",
                         "lr.predict(X_test)", predict="(lr.predict_proba(X)[:, 1] > THRESH).astype(int)")
    assert plan.methods == {"predict": "(lr.predict_proba(X)[:, 1] > THRESH).astype(int)"}
    assert plan.sample_expr == "X_test"
    assert code.imports == [] and sorted(code.by_value) == ["THRESH", "lr"]


def test_predict_flag_naming_unknown_variable(run_cells: Any) -> None:
    with pytest.raises(ExtractionError, match="uses `nope`, which is not defined"):
        plan_of(run_cells, "lr = LogisticRegression().fit(X_train, y_train)", "lr.predict(X_test)",
                predict="nope.predict(X)")


def test_predict_flag_that_does_not_parse(run_cells: Any) -> None:
    with pytest.raises(ExtractionError, match="is not a Python expression"):
        plan_of(run_cells, "lr = LogisticRegression().fit(X_train, y_train)", predict="lr.predict(X")


def test_model_flag_naming_missing_variable_lists_the_models(run_cells: Any) -> None:
    with pytest.raises(ExtractionError, match="--model clff: NameError") as info:
        plan_of(run_cells, "clf = LogisticRegression().fit(X_train, y_train)", model="clff")
    assert "clf (sklearn.linear_model._logistic.LogisticRegression)" in (info.value.hint or "")


def test_two_models_in_the_last_statement_is_ambiguous(run_cells: Any) -> None:
    with pytest.raises(ExtractionError, match="calls several models") as info:
        plan_of(run_cells, "a = LogisticRegression().fit(X_train, y_train)\nb = LogisticRegression().fit(X_train, y_train)",
                "(a.predict(X_test) == b.predict(X_test)).mean()")
    assert "--model" in (info.value.hint or "")


def test_fallback_to_the_only_fitted_model_needs_a_sample(run_cells: Any) -> None:
    with pytest.raises(ExtractionError, match="no sample input"):
        plan_of(run_cells, "lr = LogisticRegression().fit(X_train, y_train)")
    plan, _ = plan_of(run_cells, "lr = LogisticRegression().fit(X_train, y_train)", sample="X_test")
    assert plan.methods["predict"] == "lr.predict(X)" and plan.sample_expr == "X_test"


def test_no_model_and_unfitted_models_are_not_models(run_cells: Any) -> None:
    with pytest.raises(ExtractionError, match="no model found"):
        plan_of(run_cells, "template = LogisticRegression()")


def test_several_fitted_models_without_a_call(run_cells: Any) -> None:
    with pytest.raises(ExtractionError, match="several fitted models.*a \\(.*b \\("):
        plan_of(run_cells, "a = LogisticRegression().fit(X_train, y_train)\nb = LogisticRegression().fit(X_train, y_train)")


def test_preprocess_flag_wraps_the_input(run_cells: Any) -> None:
    plan, code = plan_of(run_cells, "def fix(df):\n    return df.fillna(0)",
                         "lr = LogisticRegression().fit(X_train, y_train)", "lr.predict(X_test)", preprocess="fix")
    assert plan.methods["predict"] == "lr.predict(fix(X))"
    assert [d.name for d in code.definitions] == ["fix"]


def test_function_using_ipython_magics_cannot_be_served(run_cells: Any) -> None:
    with pytest.raises(ExtractionError, match="uses IPython magics"):
        cells, kernel = run_cells(SETUP, "get_ipython = lambda: None",
                                  "def prep(df):\n    if df is None:\n        !echo hi\n    return df",
                                  "lr = LogisticRegression().fit(X_train, y_train)", "lr.predict(prep(X_test))")
        index = index_cells(cells)
        plan = choose(index, Choices(), kernel)
        plan_code(index, plan, kernel)


def test_model_name_rebound_after_the_call_is_an_error(run_cells: Any) -> None:
    with pytest.raises(ExtractionError, match="cell 4 binds `model` to something else afterwards") as info:
        plan_of(run_cells, "model = LogisticRegression().fit(X_train, y_train)", "model.predict(X_test)",
                "model = RandomForestClassifier(n_estimators=3).fit(X_train, y_train)")
    assert "--model model" in (info.value.hint or "")


def test_refitting_the_same_model_after_the_call_is_fine(run_cells: Any) -> None:
    plan, _ = plan_of(run_cells, "model = LogisticRegression().fit(X_train, y_train)", "model.predict(X_test)",
                      "model = model.fit(X, y)")
    assert plan.methods["predict"] == "model.predict(X)"


def test_aliases_of_one_model_are_listed_once(run_cells: Any) -> None:
    with pytest.raises(ExtractionError, match=r"rf \(.*RandomForestClassifier; also named m\)"):
        plan_of(run_cells, "lr = LogisticRegression().fit(X_train, y_train)",
                "rf = RandomForestClassifier(n_estimators=3).fit(X_train, y_train)", "for m in (lr, rf):\n    pass")


def test_names_the_pickles_look_up_in_main_are_emitted_first_with_the_definitions_they_need(run_cells: Any) -> None:
    cells, kernel = run_cells(SETUP, "class Base:\n    k = 2", "class Scale(Base):\n    pass",
                              "def unrelated(x):\n    return x", "Made = type('Made', (), {})",
                              "lr = LogisticRegression().fit(X_train, y_train)", "lr.predict(X_test)")
    index = index_cells(cells)
    plan = choose(index, Choices(), kernel)
    code = plan_code(index, plan, kernel, ["Scale"])
    assert code.main_names == ["Scale"] and code.early == ["Scale", "Base"]
    assert [d.name for d in code.definitions] == ["Base", "Scale"] and code.by_value == ["lr"]
    # a class made by a call has no source to emit: a packaging error naming it and the fix
    with pytest.raises(ExtractionError, match=r"need `__main__.Made`.*binds it by assignment") as err:
        plan_code(index, plan, kernel, ["Made"])
    assert "class`/`def` statement" in (err.value.hint or "")
