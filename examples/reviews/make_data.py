"""Generate reviews.csv: short synthetic product reviews with a star rating (fixed seed, no downloads).

Run from this folder: python make_data.py
"""

import csv
import random

SEED = 7
N = 520

PRODUCTS = ["headphones", "blender", "phone case", "desk lamp", "backpack", "kettle", "keyboard", "running shoes",
            "coffee grinder", "water bottle", "charger", "yoga mat", "toaster", "mouse", "umbrella"]
POS = ["great", "excellent", "love it", "works perfectly", "sturdy", "comfortable", "fast shipping",
       "highly recommend", "worth every penny", "easy to use", "beautiful", "solid build", "very happy",
       "exceeded expectations", "quiet", "best purchase"]
NEG = ["broke", "terrible", "waste of money", "stopped working", "cheap plastic", "disappointed", "returned it",
       "does not fit", "flimsy", "arrived damaged", "awful", "poor quality", "would not buy again", "noisy",
       "leaks", "refund"]
NEUTRAL = ["the", "it", "after two weeks", "for my son", "so far", "honestly", "overall", "color is ok",
           "packaging was fine", "bought this", "as described", "on sale", "second one", "compared to my old one"]
OPENERS = ["", "", "", "UPDATE: ", "Review: ", "", "Honestly ", ""]
NOISE_TAGS = ["<br/>", "<br>", "<b>", "</b>", "<p>", "</p>", "<i>", "&nbsp;"]


def sentence(rng, words_from, n):
    words = rng.sample(words_from, k=min(n, len(words_from)))
    words += rng.sample(NEUTRAL, k=rng.randint(1, 3))
    rng.shuffle(words)
    return " ".join(words)


def make_review(rng, rating):
    product = rng.choice(PRODUCTS)
    if rating >= 4:
        main, other = POS, NEG
    else:
        main, other = NEG, POS
    parts = [f"{rng.choice(OPENERS)}this {product}", sentence(rng, main, rng.randint(1, 3))]
    if rng.random() < 0.25:  # mixed feelings
        parts.append("but " + rng.choice(other))
    text = ", ".join(parts) + rng.choice([".", "!", "!!", "...", "", " :)", " :("])
    # noise: html, shouting, stray punctuation
    if rng.random() < 0.3:
        tag = rng.choice(NOISE_TAGS)
        pos = text.find(" ", rng.randint(0, max(1, len(text) - 1)))
        text = text[:pos] + tag + text[pos:] if pos > 0 else tag + text
    if rng.random() < 0.2:
        w = rng.choice(main).upper()
        text = text + " " + w + "!!!"
    if rng.random() < 0.1:
        text = text.upper()
    if rng.random() < 0.15:
        text = text.replace(" ", "  ", 1)
    return product, text


def main():
    rng = random.Random(SEED)
    rows = []
    for i in range(N):
        rating = rng.choices([1, 2, 3, 4, 5], weights=[14, 10, 8, 22, 46])[0]
        text_rating = rating
        if rating == 3:
            text_rating = rng.choice([2, 4])
        elif rng.random() < 0.04:  # label noise: text doesn't match the stars
            text_rating = 6 - rating
        product, text = make_review(rng, text_rating)
        rows.append({"review_id": 10_000 + i, "product": product, "rating": rating, "text": text,
                     "date": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"})
    with open("reviews.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["review_id", "date", "product", "rating", "text"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} reviews to reviews.csv")


if __name__ == "__main__":
    main()
