"""Generate two small monthly taxi-trip files shaped like the NYC TLC green-taxi data (fixed seed, no downloads).

Run from this folder: python make_data.py  ->  green_tripdata_2024-01.csv, green_tripdata_2024-02.csv
"""

import numpy as np
import pandas as pd

SEED = 11
ROWS_PER_MONTH = 1100
ZONES = [7, 41, 42, 43, 65, 74, 75, 82, 95, 97, 129, 166, 181, 244, 255, 260]
# rough per-zone congestion factor: some zones are slow (midtown-ish), some fast
ZONE_SLOWNESS = dict(zip(ZONES, np.random.default_rng(0).permutation(np.linspace(0.8, 1.4, len(ZONES)))))


def month(rng, year, mon):
    n = ROWS_PER_MONTH
    start = pd.Timestamp(year=year, month=mon, day=1)
    days = pd.Timestamp(year=year, month=mon, day=1).days_in_month
    pickup = start + pd.to_timedelta(rng.integers(0, days * 24 * 3600, n), unit="s")
    pu = rng.choice(ZONES, n)
    same = rng.random(n) < 0.25
    do = np.where(same, pu, rng.choice(ZONES, n))
    dist = np.round(np.where(same, rng.gamma(1.5, 0.6, n), rng.gamma(2.2, 1.6, n)), 2)
    hour = pickup.hour.to_numpy()
    rush = ((hour >= 7) & (hour <= 9)) | ((hour >= 16) & (hour <= 19))
    slow = np.array([ZONE_SLOWNESS[p] * ZONE_SLOWNESS[d] for p, d in zip(pu, do)])
    minutes = 3 + dist * 3.1 * slow * np.where(rush, 1.35, 1.0) + rng.normal(0, 2.5, n)
    minutes = np.maximum(minutes, 0.2)
    # junk rows like the real data: zero-length trips and meters left running
    junk = rng.random(n)
    minutes[junk < 0.02] = rng.uniform(0, 0.9, (junk < 0.02).sum())
    minutes[junk > 0.985] = rng.uniform(70, 600, (junk > 0.985).sum())
    dropoff = pickup + pd.to_timedelta(np.round(minutes * 60), unit="s")
    passengers = rng.choice([1, 1, 1, 1, 2, 2, 3, 5], n).astype(float)
    passengers[rng.random(n) < 0.05] = np.nan
    fare = np.round(3 + 2.5 * dist + 0.5 * minutes, 2)
    df = pd.DataFrame({
        "VendorID": rng.choice([1, 2], n, p=[0.2, 0.8]),
        "lpep_pickup_datetime": pickup,
        "lpep_dropoff_datetime": dropoff,
        "PULocationID": pu,
        "DOLocationID": do,
        "passenger_count": passengers,
        "trip_distance": dist,
        "fare_amount": fare,
        "payment_type": rng.choice([1, 2, 3], n, p=[0.6, 0.38, 0.02]),
    }).sort_values("lpep_pickup_datetime")
    return df


def main():
    rng = np.random.default_rng(SEED)
    for mon in (1, 2):
        df = month(rng, 2024, mon)
        name = f"green_tripdata_2024-{mon:02d}.csv"
        df.to_csv(name, index=False)
        print(f"wrote {len(df)} rows to {name}")


if __name__ == "__main__":
    main()
