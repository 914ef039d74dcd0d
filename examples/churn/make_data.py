"""Generate churn.csv: a synthetic subscription-customer snapshot (fixed seed, no downloads).

Messy on purpose, like a real CRM export: inconsistent region spelling, blank total_charges for
brand-new customers, a few mistyped monthly charges, missing last_login dates.
Run from this folder: python make_data.py
"""

import numpy as np
import pandas as pd

SEED = 2024
N = 1500
SNAPSHOT = pd.Timestamp("2024-06-30")


def main():
    rng = np.random.default_rng(SEED)
    signup = SNAPSHOT - pd.to_timedelta(rng.integers(3, 5 * 365, N), unit="D")
    tenure_m = (SNAPSHOT - signup).days.to_numpy() / 30.44

    plan = rng.choice(["basic", "standard", "premium"], N, p=[0.45, 0.35, 0.20])
    contract = rng.choice(["month-to-month", "one year", "two year"], N, p=[0.55, 0.28, 0.17])
    payment = rng.choice(["card", "bank transfer", "paypal", "electronic check"], N, p=[0.4, 0.2, 0.2, 0.2])
    region = rng.choice(["North", "South", "East", "West", "north", "WEST ", " east"], N,
                        p=[0.22, 0.25, 0.2, 0.2, 0.05, 0.04, 0.04])
    base = pd.Series(plan).map({"basic": 19.0, "standard": 39.0, "premium": 69.0}).to_numpy()
    monthly = np.round(base + rng.normal(0, 6, N).clip(-12, 25), 2)
    typo = rng.random(N) < 0.01
    monthly[typo] = monthly[typo] * 10  # someone typed 399.0 instead of 39.9
    total = np.round(monthly * np.maximum(tenure_m, 0) * rng.uniform(0.9, 1.05, N), 2)
    tickets = rng.poisson(0.6 + 0.8 * (plan == "basic"), N)
    logins = rng.poisson(np.where(rng.random(N) < 0.3, 2, 14))
    days_since_login = np.minimum(rng.exponential(8 + 40 * (logins < 4), N).astype(int), 365)
    last_login = SNAPSHOT - pd.to_timedelta(days_since_login, unit="D")

    z = (-0.7
         + 1.3 * (contract == "month-to-month") - 0.9 * (contract == "two year")
         - 0.05 * tenure_m
         + 0.45 * tickets
         - 0.08 * logins
         + 0.015 * days_since_login
         + 0.6 * (payment == "electronic check")
         + 0.012 * (monthly.clip(0, 120) - 40))
    churned = rng.random(N) < 1 / (1 + np.exp(-z))

    df = pd.DataFrame({
        "customer_id": [f"C{100000 + i}" for i in range(N)],
        "signup_date": signup.strftime("%Y-%m-%d"),
        "last_login": last_login.strftime("%Y-%m-%d"),
        "plan": plan,
        "contract": contract,
        "payment_method": payment,
        "region": region,
        "monthly_charges": monthly,
        "total_charges": total.astype(str),
        "support_tickets": tickets,
        "logins_30d": logins,
        "churned": np.where(churned, "Yes", "No"),
    })
    new = tenure_m < 1
    df.loc[new, "total_charges"] = " "  # billing system leaves it blank before the first invoice
    df.loc[rng.random(N) < 0.04, "last_login"] = ""
    df.to_csv("churn.csv", index=False)
    print(f"wrote {len(df)} rows, churn rate {churned.mean():.2%}")


if __name__ == "__main__":
    main()
