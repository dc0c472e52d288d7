"""The registry of named public data sets: where each lives, its files, checksums and format.

A data set is fetched file by file from ``<base_url><file>`` (or from a mirror laid out as
``<name>/<file>``) and every file is checked against its pinned :class:`Pin` before use: its size and
SHA-256, or, for the few files whose bytes we could not obtain to hash, the Git blob id that the public
repository records for them (a SHA-1 over the size and the bytes). Nothing is trusted on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hashgnn.errors import DataError


@dataclass(frozen=True)
class Pin:
    """What one registry file must be: its size in bytes and SHA-256, or its Git blob id.

    ``git_blob`` pins files that only the public Git repository describes (its tree names the blob
    id, ``sha1(b"blob <size>\\0" + bytes)``); ``max_bytes`` bounds their download.
    """

    sha256: str | None = None
    size: int | None = None
    git_blob: str | None = None
    max_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if self.sha256 is None and self.git_blob is None:
            raise ValueError("a Pin needs a sha256 or a git_blob")

    @property
    def limit(self) -> int:
        """The most bytes a download of this file may deliver."""
        return self.size if self.size is not None else self.max_bytes

    def describe(self) -> str:
        """How the file is pinned, for messages."""
        if self.sha256 is not None:
            return f"SHA-256 {self.sha256}" + (f", {self.size} bytes" if self.size is not None else "")
        return f"Git blob {self.git_blob}"


@dataclass(frozen=True)
class DatasetSpec:
    """One named data set.

    ``files`` are needed to load it; ``extra_files`` are side files of the same source (id maps,
    social links), fetched only on request. Both map a file name to its :class:`Pin`.
    ``fmt`` is ``"txt"`` (one line per user: ``user item item ...``, 0-based ids; ``train.txt`` and
    ``test.txt``) or ``"lastfm"`` (tab-separated ``user item count`` rows with 1-based ids;
    ``data1.txt`` is train, ``test1.txt`` test). ``counts`` are the published numbers.
    """

    name: str
    description: str
    base_url: str
    fmt: str
    files: dict[str, Pin]
    extra_files: dict[str, Pin] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    train_file: str = "train.txt"
    test_file: str = "test.txt"

    def all_files(self, extras: bool = False) -> dict[str, Pin]:
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
            "verified": True,
            "pinned_by": sorted({"sha256" if p.sha256 else "git_blob" for p in self.files.values()}),
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
                "train.txt": Pin("7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62", 4633414),
                "test.txt": Pin("099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3", 1372559),
            },
            extra_files={
                "user_list.txt": Pin("5344c4d0deef610e1f148f23ad216a0db03b36f88834cd39a06786a672c5f5a1", 351203),
                "item_list.txt": Pin("6b186f92890cc3f0c15a6dae5d6285f125a302bb8c5ea0cd9a16cf9c16347139", 506926),
            },
            counts={"n_users": 29858, "n_items": 40981, "n_train": 810128, "n_test": 217242},
        ),
        DatasetSpec(
            name="ml-1m",
            description="MovieLens-1M as implicit feedback, ~80/20 per user (the BGCH / BiGeaR split)",
            base_url="https://raw.githubusercontent.com/yankai-chen/BGCH/main/dataset/movie/",
            fmt="txt",
            files={
                "train.txt": Pin("4e6d1e5cc25bccebedec745504afbfcbf6006bfb99d788f231c228eded9c2dcb", 3793058),
                "test.txt": Pin("764c1e4d8af7d8483b2d74958fcd144113db9edc4a9ee9e41e6f641d690c2aec", 984871),
            },
            counts={"n_users": 6040, "n_items": 3952, "n_train": 797758, "n_test": 202451},
        ),
        DatasetSpec(
            name="music_toy",
            description="A small music listening set (for fast tests)",
            base_url="https://raw.githubusercontent.com/yankai-chen/BiGeaR/main/dataset/music_toy/",
            fmt="txt",
            files={
                "train.txt": Pin("4dcd0e5fc8711debf1d6e1f91616362ebf0c8622abc8c3312eb213a93c2c0f36", 74489),
                "test.txt": Pin("7e998ec479f3b90f17f74d1a9b3bcf65620f3a358f236cd0cbce201ac43b7ba1", 28753),
            },
            counts={"n_users": 1872, "n_items": 3846, "n_train": 16180, "n_test": 4998},
        ),
        DatasetSpec(
            name="lastfm",
            description="Last.fm listening counts (LightGCN-PyTorch's split), raw tab-separated pairs",
            base_url="https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/master/data/lastfm/",
            fmt="lastfm",
            files={
                "data1.txt": Pin("c82af3228cbbda2f55a39244de09ed93292894f1d0d9f1908ebb57e27598fded", 579727),
                "test1.txt": Pin("de4417c0e6123284ce59a0934bcf5288ec1ec8774a18a1eef453c9952dfa48f9", 144867),
            },
            extra_files={
                "trustnetwork.txt": Pin("5b5bd7cbe4d22f3cd333dbfc7ec4b995cb2bdb28d95b0e9c5fc5607079f7b69e", 249214),
                "all_data.csv": Pin("6815d35cf1dc2a0534618fff131618d55c86ee6b2d0c56f2dc517b1608ef3ec1", 1071041),
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
            files={
                # train.txt is pinned by the blob id in the public repository's tree (kuandeng/LightGCN,
                # master); its bytes were out of reach to hash here. The other files were hashed from it.
                "train.txt": Pin(git_blob="cda12361055ba448ae4bd1070f6000c16dea8f22", max_bytes=64 << 20),
                "test.txt": Pin("9cd9b37926cd1447a06625ffa7914527573fb097c10cb0bbdb1d1b8ded3742fe", 1986152),
            },
            extra_files={
                "user_list.txt": Pin("4931519d8b3c40d71a34cc386c3287b6d63c1be9a82edd7ee6bfad765e640778", 907278),
                "item_list.txt": Pin("1091bc824b60561906df552f2f7cb3ec61767b1e46fd4386b44400ae49712007", 1092298),
            },
            counts={"n_users": 31668, "n_items": 38048, "n_train": 1237259, "n_test": 324147},
        ),
        DatasetSpec(
            name="amazon-book",
            description="Amazon-Book reviews, the LightGCN / NGCF split (10-core, 80/20 per user)",
            base_url=_LIGHTGCN + "amazon-book/",
            fmt="txt",
            files={
                "train.txt": Pin(git_blob="6ef55159c5f1fd7f6d86eb9ff290d0cc2854ac99", max_bytes=128 << 20),
                "test.txt": Pin("6250754994dd953b91b48dccdd77a73f318e0634b4757c2abfcc9d33a54ab0f5", 3848611),
            },
            extra_files={
                "user_list.txt": Pin("b59cc7e4a1826e1eb313c4f0557bdafbb70661346d9c93911b97fe0e9fbd7078", 1080734),
                "item_list.txt": Pin("8eee6caf6e666d95fc24ca8e0ec089ee90b1b2d1dc17933726359a6b3ecd62cb", 1546089),
            },
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
        raise DataError(
            f"unknown data set {name!r}; registered: {', '.join(REGISTRY)} (see `hashgnn data list`)"
        ) from None
