"""MovieLens, every release as distributed: ``ratings.dat`` of ML-1M/10M (``user::item::rating::ts``),
ML-100k's ``u.data`` (tab-separated), and the CSV releases' ``ratings.csv`` (``userId,movieId,rating,
timestamp``, with or without the header). Ratings may be integers or half stars (``3.5``).

Every rating is an interaction of type browse (implicit feedback, the usual protocol of SASRec-style
models). The category is the movie's first genre from the movies file beside the ratings
(``movies.dat`` / ``ml-1m_movies.dat``, ``movies.csv``, or ML-100k's ``u.item`` + ``u.genre``),
else None.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

from stream_app.core.events import Event
from stream_app.tools.datasets.base import BadLine, LoadReport, delimited, first_lines, need_id, to_int

CSV_HEADER = "userid,movieid,rating,timestamp"
# ML-100k's u.genre, in the order of u.item's genre flags (used when u.genre is absent).
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")


def separator(line: str) -> str | None:
    """The field separator of a MovieLens ratings line (``::``, tab or comma), None if it is not one."""
    for sep in ("::", "\t", ","):
        parts = line.split(sep)
        if len(parts) == 4:
            if sep == "," and parts[0].strip().lower() == "userid":
                return sep if line.replace(" ", "").lower() == CSV_HEADER else None
            if parts[0].isdigit() and parts[1].isdigit() and parts[3].isdigit() and _is_rating(parts[2]):
                return sep
    return None


def _is_rating(value: str) -> bool:
    try:
        r = float(value)
    except ValueError:
        return False
    return math.isfinite(r) and 0 <= r <= 5


def _u_item_genres(folder: Path) -> dict[str, str]:
    names = list(ML100K_GENRES)
    if (folder / "u.genre").exists():
        rows = [r.split("|") for r in (folder / "u.genre").read_text(encoding="latin-1").splitlines()]
        names = [r[0] for r in sorted((r for r in rows if len(r) == 2), key=lambda r: int(r[1]))]
    out: dict[str, str] = {}
    with open(folder / "u.item", encoding="latin-1") as fh:
        for line in fh:
            parts = line.rstrip("\r\n").split("|")
            flags = parts[5:]
            first = next((i for i, f in enumerate(flags) if f == "1"), None)
            if first is not None and first < len(names):
                out[parts[0]] = names[first]
    return out


def movielens_genres(ratings_path: Path) -> dict[str, str]:
    """item -> first genre, from the movies file beside the ratings (empty when absent)."""
    folder = ratings_path.parent
    for name in ("ml-1m_movies.dat", "movies.dat"):
        if (folder / name).exists():
            out: dict[str, str] = {}
            with open(folder / name, encoding="latin-1") as fh:
                for line in fh:
                    parts = line.rstrip("\r\n").split("::")
                    if len(parts) == 3 and parts[2]:
                        out[parts[0]] = parts[2].split("|")[0]
            return out
    if (folder / "movies.csv").exists():
        with open(folder / "movies.csv", encoding="utf-8", newline="") as fh:
            rows = csv.reader(fh)
            return {r[0]: r[2].split("|")[0] for r in rows
                    if len(r) == 3 and r[0].isdigit() and r[2] and r[2] != "(no genres listed)"}
    if (folder / "u.item").exists():
        return _u_item_genres(folder)
    return {}


def read_movielens(path: Path, report: LoadReport, progress: bool) -> Iterator[Event]:
    head = first_lines(path, 1, encoding="latin-1")
    sep = (separator(head[0]) if head else None) or "::"
    genres = movielens_genres(path)

    def parse(n: int, parts: list[str]) -> Event:
        user, item, rating, ts = parts
        if not _is_rating(rating):
            raise BadLine("bad rating", f"not a number in 0..5: {rating[:40]!r}")
        return Event(f"movielens:{n}", need_id(user, "user"), need_id(item, "item"),
                     genres.get(item), to_int(ts, "timestamp") * 1000, "browse")

    def is_header(line: str) -> bool:
        return line.replace(" ", "").lower() == CSV_HEADER

    return delimited(path, report, progress, sep, 4, parse, encoding="latin-1", header=is_header)
