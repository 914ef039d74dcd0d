from __future__ import annotations

from mlship.notebook.analyze import find_candidates, free_names, index_cells, predicting_functions
from mlship.notebook.read import Cell, parse_directives


def cells(*sources: str) -> tuple[Cell, ...]:
    return tuple(Cell(i, s, parse_directives(s)) for i, s in enumerate(sources, start=1))


def calls(*sources: str) -> list[str]:
    return [c.source for c in find_candidates(index_cells(cells(*sources)))]


def test_direct_prediction_calls_in_order() -> None:
    assert calls("a = lr.predict(X)", "print(acc(y, rf.predict_proba(X_test)[:, 1]))") == [
        "lr.predict(X)", "rf.predict_proba(X_test)"]


def test_attribute_receivers_and_keyword_data() -> None:
    assert calls("grid.best_estimator_.predict(X=df)", "res.predict(exog=dict(x1=x1n))") == [
        "grid.best_estimator_.predict(X=df)", "res.predict(exog=dict(x1=x1n))"]


def test_calls_inside_function_bodies_and_loops_over_models_are_not_candidates() -> None:
    found = calls(
        "def plot(m, X):\n    return m.predict(X)",
        "for m in models:\n    print(m.predict(X))",
        "preds = [m.predict(X) for m in models]",
        "f = lambda: clf.predict(X)",
    )
    assert found == []


def test_notebook_function_that_returns_predictions_is_a_candidate() -> None:
    idx = index_cells(cells(
        "def predict(df, dv, model):\n    X = dv.transform(df.to_dict(orient='records'))\n    return model.predict(X)",
        "def show(model, X):\n    print(model.predict(X))",
        "y_pred = predict(df_val, dv, model)",
        "show(model, X)",
    ))
    assert predicting_functions(idx) == {"predict"}
    [c] = find_candidates(idx)
    assert (c.kind, c.receiver, c.source) == ("function", "predict", "predict(df_val, dv, model)")


def test_predicting_function_through_another_function() -> None:
    idx = index_cells(cells("def inner(m, X):\n    return m.predict(X)", "def outer(X):\n    return inner(clf, X) * 2"))
    assert predicting_functions(idx) == {"inner", "outer"}


def test_magics_become_python_and_timed_bodies_are_analysed() -> None:
    found = calls("%matplotlib inline\nfiles = !ls\n!pip install x", "%%time\ny = clf.predict(X_test)\n",
                  "%time z = reg.predict(X_test)")
    assert found == ["clf.predict(X_test)", "reg.predict(X_test)"]


def test_skipped_cells_and_unparsable_cells_are_left_out() -> None:
    idx = index_cells(cells("# mlship: skip\ny = clf.predict(X)", "this is not python ("))
    assert find_candidates(idx) == []
    assert [c.number for c, _ in idx.unparsed] == [2]


def test_definitions_keep_the_last_binding() -> None:
    idx = index_cells(cells("import numpy as np\nfrom sklearn.pipeline import Pipeline as P",
                            "def clean(s):\n    return s", "clean = str.lower", "@dec\ndef g():\n    pass"))
    assert idx.definitions["np"].source == "import numpy as np"
    assert idx.definitions["P"].source == "from sklearn.pipeline import Pipeline as P"
    assert idx.definitions["clean"].kind == "assign"
    assert idx.definitions["g"].source == "@dec\ndef g():\n    pass"


def test_free_names() -> None:
    src = "def f(df, k=DEFAULT):\n    global counter\n    out = [clean(t) for t in df[COLS]]\n    return np.array(out) + k"
    assert free_names(src) == {"DEFAULT", "counter", "clean", "COLS", "np"}
    assert free_names("model.predict([clean(t) for t in X])", "eval") == {"model", "clean", "X"}
    assert free_names("class T(Base):\n    scale = SCALE\n    def m(self):\n        return helper(self)") == {
        "Base", "SCALE", "helper"}


def test_a_model_called_directly_is_a_candidate_for_the_kernel_to_confirm() -> None:
    index = index_cells(cells(
        "import torch\nmodel = Net()",
        "for xb in batches:\n    loss = loss_fn(model(xb), yb)",
        "with torch.inference_mode():\n    out = model(X_test_t)",
        "print(len(X_test_t))",
    ))
    found = [(c.kind, c.receiver, c.source) for c in find_candidates(index)]
    # loop-local data, builtins and imports, calls with several arguments: not candidates
    assert found == [("call", "model", "model(X_test_t)")]
