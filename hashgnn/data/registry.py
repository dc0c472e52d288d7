"""The registry of named public data sets: where each lives, its files, checksums and format.

A data set is fetched file by file from ``<base_url><file>`` (or from a mirror laid out as
``<name>/<file>``) and every file is checked against its SHA-256 before use. Where no SHA-256 is
recorded here (``None``), the hash of the first download is recorded in the cache and later copies
are checked against it ("trust on first use").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hashgnn.errors import DataError


@dataclass(frozen=True)
class DatasetSpec:
    """One named data set.

    ``files`` are needed to load it; ``extra_files`` are side files of the same source (id maps,
    social links), fetched only on request. Both map a file name to its SHA-256 (or None).
    ``fmt`` is ``"txt"`` (one line per user: ``user item item ...``, 0-based ids; ``train.txt`` and
    ``test.txt``) or ``"lastfm"`` (tab-separated ``user item count`` rows with 1-based ids;
    ``data1.txt`` is train, ``test1.txt`` test). ``counts`` are the published numbers.
    """

    name: str
    description: str
    base_url: str
    fmt: str
    files: dict[str, str | None]
    extra_files: dict[str, str | None] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    train_file: str = "train.txt"
    test_file: str = "test.txt"

    def all_files(self, extras: bool = False) -> dict[str, str | None]:
        """The files to fetch: the needed ones, plus the side files when ``extras``."""
        return {**self.files, **(self.extra_files if extras else {})}

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description, as printed by ``hashgnn data list --json``."""
        return {
            "name": self.name,
            "description": self.description,
            "format": self.fmt,
            "url": self.base_url,
            "files": sorted(self.files),
            "verified": all(h is not None for h in self.files.values()),
            **self.counts,
        }


_LIGHTGCN = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/"

REGISTRY: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec(
            name="gowalla",
            description="Gowalla check-ins, the LightGCN / NGCF split (10-core, 80/20 per user)",
            base_url=_LIGHTGCN + "gowalla/",
            fmt="txt",
            files={
                "train.txt": "7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
                "test.txt": "099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
            },
            extra_files={
                "user_list.txt": "5344c4d0deef610e1f148f23ad216a0db03b36f88834cd39a06786a672c5f5a1",
                "item_list.txt": "6b186f92890cc3f0c15a6dae5d6285f125a302bb8c5ea0cd9a16cf9c16347139",
            },
            counts={"n_users": 29858, "n_items": 40981, "n_train": 810128, "n_test": 217242},
        ),
        DatasetSpec(
            name="ml-1m",
            description="MovieLens-1M as implicit feedback, ~80/20 per user (the BGCH / BiGeaR split)",
            base_url="https://raw.githubusercontent.com/yankai-chen/BGCH/main/dataset/movie/",
            fmt="txt",
            files={
                "train.txt": "4e6d1e5cc25bccebedec745504afbfcbf6006bfb99d788f231c228eded9c2dcb",
                "test.txt": "764c1e4d8af7d8483b2d74958fcd144113db9edc4a9ee9e41e6f641d690c2aec",
            },
            counts={"n_users": 6040, "n_items": 3952, "n_train": 797758, "n_test": 202451},
        ),
        DatasetSpec(
            name="music_toy",
            description="A small music listening set (for fast tests)",
            base_url="https://raw.githubusercontent.com/yankai-chen/BiGeaR/main/dataset/music_toy/",
            fmt="txt",
            files={
                "train.txt": "4dcd0e5fc8711debf1d6e1f91616362ebf0c8622abc8c3312eb213a93c2c0f36",
                "test.txt": "7e998ec479f3b90f17f74d1a9b3bcf65620f3a358f236cd0cbce201ac43b7ba1",
            },
            counts={"n_users": 1872, "n_items": 3846, "n_train": 16180, "n_test": 4998},
        ),
        DatasetSpec(
            name="lastfm",
            description="Last.fm listening counts (LightGCN-PyTorch's split), raw tab-separated pairs",
            base_url="https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/master/data/lastfm/",
            fmt="lastfm",
            files={
                "data1.txt": "c82af3228cbbda2f55a39244de09ed93292894f1d0d9f1908ebb57e27598fded",
                "test1.txt": "de4417c0e6123284ce59a0934bcf5288ec1ec8774a18a1eef453c9952dfa48f9",
            },
            extra_files={
                "trustnetwork.txt": "5b5bd7cbe4d22f3cd333dbfc7ec4b995cb2bdb28d95b0e9c5fc5607079f7b69e",
                "all_data.csv": "6815d35cf1dc2a0534618fff131618d55c86ee6b2d0c56f2dc517b1608ef3ec1",
            },
            counts={"n_users": 1892, "n_items": 4489, "n_train": 42135, "n_test": 10533},
            train_file="data1.txt",
            test_file="test1.txt",
        ),
        DatasetSpec(
            name="yelp2018",
            description="Yelp 2018 challenge, the LightGCN / NGCF split (10-core, 80/20 per user)",
            base_url=_LIGHTGCN + "yelp2018/",
            fmt="txt",
            files={"train.txt": None, "test.txt": None},
            extra_files={"user_list.txt": None, "item_list.txt": None},
            counts={"n_users": 31668, "n_items": 38048, "n_train": 1237259, "n_test": 324147},
        ),
        DatasetSpec(
            name="amazon-book",
            description="Amazon-Book reviews, the LightGCN / NGCF split (10-core, 80/20 per user)",
            base_url=_LIGHTGCN + "amazon-book/",
            fmt="txt",
            files={"train.txt": None, "test.txt": None},
            extra_files={"user_list.txt": None, "item_list.txt": None},
            counts={"n_users": 52643, "n_items": 91599, "n_train": 2380730, "n_test": 603378},
        ),
    ]
}


def list_datasets() -> list[str]:
    """Names of the registered data sets, in registry order."""
    return list(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered data set; a :class:`DataError` listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; registered: {', '.join(REGISTRY)} "
                        "(see `hashgnn data list`)") from None
