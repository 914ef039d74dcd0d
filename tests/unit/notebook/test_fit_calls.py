"""Models used only through fit_predict / fit_transform (clustering) are served through their predict."""

from __future__ import annotations

from typing import Any

import pytest

from mlship.errors import ExtractionError
from mlship.notebook.analyze import index_cells
from mlship.notebook.extract import Choices, choose

SETUP = """
import numpy as np
import pandas as pd
from sklearn.cluster import DBSCAN, KMeans
from sklearn.mixture import GaussianMixture
rng = np.random.default_rng(0)
customers = pd.DataFrame(rng.normal(size=(60, 2)), columns=["income", "score"])
"""
ELBOW = """
wcss = []
for k in range(1, 5):
    kmeans = KMeans(n_clusters=k, n_init=2, random_state=0)
    kmeans.fit(customers)
    wcss.append(kmeans.inertia_)
"""


def plan_of(run_cells: Any, *sources: str) -> Any:
    cells, kernel = run_cells(SETUP, *sources)
    return choose(index_cells(cells), Choices(), kernel)


def test_fit_predict_after_an_elbow_loop_serves_predict_and_transform(run_cells: Any) -> None:
    plan = plan_of(run_cells, ELBOW, "kmeans = KMeans(n_clusters=3, n_init=2, random_state=0)\n"
                                     "labels = kmeans.fit_predict(customers)")
    assert plan.methods == {"predict": "kmeans.predict(X)", "transform": "kmeans.transform(X)"}
    assert plan.sample_expr == "customers"
    assert plan.reason.startswith("last fit_predict call in the notebook (cell 3), served through the fitted "
                                  "model's predict")


def test_fit_transform_serves_the_same_and_fit_arguments_are_dropped(run_cells: Any) -> None:
    plan = plan_of(run_cells, "km = KMeans(n_clusters=2, n_init=2, random_state=0)\n"
                              "dist = km.fit_transform(customers, None, sample_weight=None)")
    assert plan.methods == {"predict": "km.predict(X)", "transform": "km.transform(X)"}
    plan = plan_of(run_cells, "gm = GaussianMixture(2, random_state=0)\ngroups = gm.fit_predict(customers)")
    assert plan.methods == {"predict": "gm.predict(X)", "predict_proba": "gm.predict_proba(X)"}


def test_a_prediction_call_anywhere_beats_fit_predict(run_cells: Any) -> None:
    plan = plan_of(run_cells, "km = KMeans(n_clusters=2, n_init=2, random_state=0).fit(customers)",
                   "km.predict(customers.head(1))",
                   "other = KMeans(n_clusters=3, n_init=2, random_state=0)\nlabels = other.fit_predict(customers)")
    assert plan.methods["predict"] == "km.predict(X)" and plan.sample_expr == "customers.head(1)"


def test_models_without_predict_or_not_kept_are_not_served(run_cells: Any) -> None:
    # DBSCAN labels only the data it was fitted on; KMeans(3).fit_predict(...) keeps no fitted model in a name.
    with pytest.raises(ExtractionError, match="no model found"):
        plan_of(run_cells, "db = DBSCAN(eps=0.5)\nlabels = db.fit_predict(customers)",
                "labels2 = KMeans(3, n_init=2).fit_predict(customers)")


def test_a_later_loop_that_rebinds_the_model_is_an_error(run_cells: Any) -> None:
    # The elbow loop after the final fit leaves the last k's model in `kmeans`: serving it would be wrong.
    with pytest.raises(ExtractionError, match="cell 3 binds `kmeans` to something else afterwards "
                                              r"\('kmeans = KMeans\(n_clusters=k, n_init=2, random_state=0\)'\)"):
        plan_of(run_cells, "kmeans = KMeans(n_clusters=3, n_init=2, random_state=0)\n"
                           "labels = kmeans.fit_predict(customers)", ELBOW)
    # Refitting the same object inside a later block is fine, and so is a loop that binds other names.
    plan = plan_of(run_cells, "kmeans = KMeans(n_clusters=3, n_init=2, random_state=0)\n"
                              "labels = kmeans.fit_predict(customers)",
                   "if True:\n    kmeans = kmeans.fit(customers)\nfor k in range(2):\n    other = KMeans(k + 1)")
    assert plan.methods["predict"] == "kmeans.predict(X)"
