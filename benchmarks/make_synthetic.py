"""A synthetic corpus of any size in the Amazon Reviews 2023 layout, written streaming and seeded.

    python benchmarks/make_synthetic.py --items 100000 --interactions 800000 --out /tmp/syn-0.1m
    python benchmarks/make_synthetic.py --items 4500000 --interactions 35000000 --out /data/syn-4.5m

Writes ``<Category>.jsonl`` (reviews) and ``meta_<Category>.jsonl`` (items) for 15 categories, the files
`recbase.data.sources.amazon2023` reads (``kind: amazon2023``), and ``synthetic.json``: what was written,
including every malformed line planted and the reject reason the corpus stage must give it.

The shape of the data: category sizes fall off as a power law; within a category item popularity is
Zipf-like (exponent ``--zipf``); users' history lengths are log-normal (median ``--median-history``),
each user with a home category and a share of interactions elsewhere; ratings 1-5 follow a latent item
quality plus a user bias plus noise, so like rates differ by item as on real data; timestamps increase
along each history. Titles, stores, categories, features, descriptions, details and prices are composed
from per-category vocabularies.

Malformed lines are planted *in addition* to the valid rows, a fraction ``--malformed`` of each file, so
the valid counts stay what was asked and each planted line has one expected reason:
items ``malformed_json`` (cut short) and ``null_id`` (no parent_asin); reviews ``malformed_json``,
``undecodable_text`` (invalid UTF-8), ``unparsable_timestamp``, ``unparsable_rating``, ``unknown_item``
and ``null_id`` (empty user_id).

Memory: one float32 and one int32 per item, and one chunk of users at a time; the corpus is never held.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

CATEGORIES = [
    ("All_Beauty", "All Beauty", ["Serum", "Hand Cream", "Lip Balm", "Face Mask", "Shampoo"]),
    ("Amazon_Fashion", "AMAZON FASHION", ["Scarf", "Sunglasses", "Tote Bag", "Watch", "Belt"]),
    ("Appliances", "Appliances", ["Water Filter", "Dryer Vent", "Ice Maker", "Range Hood", "Fridge Shelf"]),
    ("Arts_Crafts_and_Sewing", "Arts, Crafts & Sewing", ["Yarn", "Paint Set", "Sketchbook", "Glue Gun", "Fabric"]),
    ("Automotive", "Automotive", ["Floor Mat", "Wiper Blade", "Phone Mount", "Seat Cover", "Tire Gauge"]),
    ("Baby_Products", "Baby", ["Pacifier", "Bib", "Stroller Fan", "Bottle", "Swaddle"]),
    ("Books", "Books", ["Novel", "Cookbook", "Biography", "Field Guide", "Anthology"]),
    ("CDs_and_Vinyl", "Digital Music", ["Album", "Vinyl LP", "Box Set", "Live Recording", "Single"]),
    ("Cell_Phones_and_Accessories", "Cell Phones & Accessories", ["Phone Case", "Charger", "Screen Protector", "Cable", "Stand"]),
    ("Electronics", "All Electronics", ["Headphones", "Speaker", "Keyboard", "Webcam", "Router"]),
    ("Grocery_and_Gourmet_Food", "Grocery", ["Coffee", "Green Tea", "Olive Oil", "Granola", "Hot Sauce"]),
    ("Home_and_Kitchen", "Amazon Home", ["Skillet", "Knife Set", "Pillow", "Storage Bin", "Kettle"]),
    ("Movies_and_TV", "Movies & TV", ["Documentary", "Thriller", "Comedy Series", "Drama", "Animated Film"]),
    ("Sports_and_Outdoors", "Sports & Outdoors", ["Yoga Mat", "Water Bottle", "Tent", "Dumbbell", "Headlamp"]),
    ("Toys_and_Games", "Toys & Games", ["Puzzle", "Board Game", "Building Set", "Plush Toy", "Card Game"]),
]
ADJECTIVES = ("classic compact deluxe gentle heavy-duty light premium quiet rugged silky slim smart soft sturdy "
              "travel vintage waterproof wireless bright organic portable elegant durable cozy natural").split()
SYLLABLES = "ka lo mi ter van sol bri nor ex fen gal hol pra qui ros tal ul vex wim zor".split()
COLORS = "black white red navy green silver rose grey amber teal".split()
REVIEW_TITLES = {1: "Broke quickly", 2: "Disappointing", 3: "It is fine", 4: "Good value", 5: "Love it"}
REVIEW_TEXTS = {1: "Stopped working after a week and support never answered.",
                2: "Smaller than pictured and the finish feels cheap.",
                3: "Does the job, nothing special, arrived on time.",
                4: "Works well and looks nice, would buy again.",
                5: "Exactly what I needed, great quality for the price."}
DAY_MS = 86_400_000
START_MS = 1_420_070_400_000  # 2015-01-01
SPAN_MS = 8 * 365 * DAY_MS


def brand(k: int) -> str:
    n = len(SYLLABLES)
    return (SYLLABLES[k % n] + SYLLABLES[(k // n) % n] + SYLLABLES[(k // n // n) % n]).capitalize()


def zipf_ranks(rng: np.random.Generator, n_items: np.ndarray, a: float) -> np.ndarray:
    """0-based ranks in [0, n) drawn with P(rank r) roughly proportional to (r + 1)^-a (inverse CDF)."""
    u = rng.random(len(n_items))
    top = (n_items + 1.0) ** (1.0 - a)
    r = np.floor((1.0 + u * (top - 1.0)) ** (1.0 / (1.0 - a))).astype(np.int64) - 1
    return np.minimum(r, n_items - 1)


class Planted:
    """Malformed lines added to a file, and the reason the corpus stage must reject each with."""

    def __init__(self, rng: np.random.Generator, fraction: float) -> None:
        self.rng, self.fraction = rng, fraction
        self.counts: dict[str, dict[str, int]] = {"items": {}, "interactions": {}}

    def mix(self, table: str, lines: list[bytes], makers: dict) -> list[bytes]:
        """``lines`` with Binomial(n, fraction) bad lines inserted at random places."""
        k = int(self.rng.binomial(len(lines), self.fraction)) if lines else 0
        if k == 0:
            return lines
        reasons = list(makers)
        at = np.sort(self.rng.choice(len(lines) + 1, size=k))
        out, prev = [], 0
        for pos in at:
            out += lines[prev:pos]
            prev = pos
            reason = reasons[int(self.rng.integers(len(reasons)))]
            out.append(makers[reason](lines[int(self.rng.integers(len(lines)))]))
            self.counts[table][reason] = self.counts[table].get(reason, 0) + 1
        return out + lines[prev:]


ITEM_BAD = {
    "malformed_json": lambda line: line[: len(line) // 2],
    "null_id": lambda line: line.replace(b'"parent_asin": "', b'"parent_asin": null, "asin_was": "'),
}
REVIEW_BAD = {
    "malformed_json": lambda line: line[: len(line) // 2],
    "undecodable_text": lambda line: line.replace(b'"text": "', b'"text": "\xff\xfe'),
    "unparsable_timestamp": lambda line: line.replace(b'"timestamp": ', b'"timestamp": "last week", "ts_was": '),
    "unparsable_rating": lambda line: line.replace(b'"rating": ', b'"rating": "five stars", "rating_was": '),
    "unknown_item": lambda line: line.replace(b'"parent_asin": "B', b'"parent_asin": "Z'),
    "null_id": lambda line: line.replace(b'"user_id": "', b'"user_id": "", "user_was": "'),
}


def item_line(i: int, local: int, cat: tuple, q: float, rng_draw: np.ndarray) -> bytes:
    _, main, nouns = cat
    adj, adj2, b, col, price_c = (int(x) for x in rng_draw)
    noun = nouns[local % len(nouns)]
    store = brand(b)
    title = f"{store} {ADJECTIVES[adj].capitalize()} {noun} {COLORS[col].capitalize()} {local % 97 + 1}"
    price = "null" if price_c % 5 == 0 else f"{4.99 + (price_c % 200) * 0.75:.2f}"
    avg = min(5.0, max(1.0, 3.9 + 0.9 * q))
    return (
        f'{{"main_category": "{main}", "title": "{title}", "average_rating": {avg:.1f}, '
        f'"rating_number": {1 + price_c % 500}, '
        f'"features": ["{ADJECTIVES[adj2].capitalize()} design", "{COLORS[col]} finish"], '
        f'"description": ["A {ADJECTIVES[adj]} {noun.lower()} from {store}, made to last."], '
        f'"price": {price}, "images": [], "videos": [], "store": "{store}", '
        f'"categories": ["{main}", "{noun}s"], "details": {{"Color": "{COLORS[col]}", "Brand": "{store}"}}, '
        f'"parent_asin": "B{i:09d}", "bought_together": null}}'
    ).encode()


def review_line(user: int, item: int, ts: int, rating: int, votes: int) -> bytes:
    return (
        f'{{"rating": {rating}.0, "title": "{REVIEW_TITLES[rating]}", "text": "{REVIEW_TEXTS[rating]}", '
        f'"images": [], "asin": "A{item:09d}", "parent_asin": "B{item:09d}", "user_id": "AG{user:010d}", '
        f'"timestamp": {ts}, "helpful_vote": {votes}, "verified_purchase": true}}'
    ).encode()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--interactions", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zipf", type=float, default=0.9, help="item popularity exponent within a category")
    p.add_argument("--median-history", type=float, default=12.0)
    p.add_argument("--history-sigma", type=float, default=0.8, help="log-normal sigma of history length")
    p.add_argument("--cross-domain", type=float, default=0.2, help="share of a user's interactions off home")
    p.add_argument("--malformed", type=float, default=1e-4, help="planted bad lines per valid line")
    p.add_argument("--chunk-users", type=int, default=20_000)
    args = p.parse_args()
    if args.items < len(CATEGORIES) or args.interactions < 1:
        p.error(f"--items must be >= {len(CATEGORIES)} (one per category) and --interactions >= 1")
    if args.zipf <= 0 or args.zipf == 1.0:
        p.error("--zipf must be > 0 and != 1")
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    planted = Planted(np.random.default_rng(args.seed + 1), args.malformed)
    n_cat = len(CATEGORIES)

    # category sizes: a power law over categories, every category at least one item
    w = 1.0 / np.arange(1, n_cat + 1) ** 0.7
    w = w / w.sum()
    sizes = np.maximum(1, np.floor(w * args.items).astype(np.int64))
    sizes[0] += args.items - sizes.sum()
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    quality = rng.standard_normal(args.items).astype(np.float32)  # latent, drives ratings

    # items, one category file at a time
    for c, cat in enumerate(CATEGORIES):
        with open(os.path.join(args.out, f"meta_{cat[0]}.jsonl"), "wb") as f:
            for s in range(0, int(sizes[c]), 50_000):
                local = np.arange(s, min(int(sizes[c]), s + 50_000))
                draws = rng.integers(0, [len(ADJECTIVES), len(ADJECTIVES), 8000, len(COLORS), 1000],
                                     size=(len(local), 5))
                lines = [item_line(int(offsets[c] + j), int(j), cat, float(quality[offsets[c] + j]), d)
                         for j, d in zip(local, draws)]
                f.write(b"\n".join(planted.mix("items", lines, ITEM_BAD)) + b"\n")

    # reviews: users in chunks, each written into its categories' files
    files = [open(os.path.join(args.out, f"{cat[0]}.jsonl"), "wb") for cat in CATEGORIES]
    per_cat = np.zeros(n_cat, dtype=np.int64)
    written, users = 0, 0
    try:
        while written < args.interactions:
            lengths = np.maximum(1, np.round(rng.lognormal(np.log(args.median_history), args.history_sigma,
                                                           args.chunk_users))).astype(np.int64)
            room = args.interactions - written
            cum = np.cumsum(lengths)
            if cum[-1] > room:  # the last chunk: cut the last user at the target
                last = int(np.searchsorted(cum, room))
                lengths = lengths[: last + 1]
                lengths[-1] -= int(cum[last] - room)
            n = int(lengths.sum())
            uid = np.repeat(np.arange(users, users + len(lengths)), lengths)
            home = rng.choice(n_cat, size=len(lengths), p=w)[uid - users]
            away = rng.choice(n_cat, size=n, p=w)
            cat = np.where(rng.random(n) < args.cross_domain, away, home)
            item = offsets[cat] + zipf_ranks(rng, sizes[cat], args.zipf)
            bias = rng.normal(0.0, 0.5, len(lengths))[uid - users]
            rating = np.clip(np.round(3.9 + 0.9 * quality[item] + bias + rng.normal(0.0, 0.8, n)), 1, 5).astype(int)
            gaps = rng.exponential(5 * DAY_MS, n).astype(np.int64)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            ts = np.cumsum(gaps)
            ts = ts - np.repeat(ts[starts] - gaps[starts], lengths)  # restart the running sum per user
            ts = ts + np.repeat(START_MS + rng.integers(0, SPAN_MS, len(lengths)), lengths)
            votes = rng.poisson(0.7, n)
            for c in range(n_cat):
                m = np.flatnonzero(cat == c)
                if len(m) == 0:
                    continue
                lines = [review_line(int(uid[k]), int(item[k]), int(ts[k]), int(rating[k]), int(votes[k])) for k in m]
                files[c].write(b"\n".join(planted.mix("interactions", lines, REVIEW_BAD)) + b"\n")
                per_cat[c] += len(m)
            written += n
            users += len(lengths)
            print(f"  {written:,} / {args.interactions:,} interactions ({users:,} users, "
                  f"{time.time() - t0:.0f} s)", flush=True)
    finally:
        for f in files:
            f.close()

    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out) if f.endswith(".jsonl"))
    summary = {
        "format": "amazon2023",
        "args": vars(args),
        "items": int(args.items),
        "interactions": int(written),
        "users": int(users),
        "categories": {cat[0]: {"items": int(sizes[c]), "interactions": int(per_cat[c])}
                       for c, cat in enumerate(CATEGORIES)},
        # every planted line, by table and the reason the corpus stage must reject it with
        "planted": planted.counts,
        "bytes": int(size),
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(args.out, "synthetic.json"), "w") as f:
        json.dump(summary, f, indent=2)
    n_bad = sum(sum(v.values()) for v in planted.counts.values())
    print(f"{args.items:,} items, {written:,} interactions, {users:,} users in {n_cat} categories; "
          f"{n_bad:,} malformed lines planted; {size / 2**20:,.0f} MiB in {summary['seconds']:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
