"""A helper module beside the notebook, as many projects have: it must travel with the bundle."""

import numpy as np


def clean(df):
    return df.fillna(0).astype(np.float64)
