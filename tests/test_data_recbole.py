"""RecBole atomic files (.inter / .user / .item) and node attributes from any table, into the input encoder."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from hashgnn.config import DataConfig, RunConfig
from hashgnn.data import load_interactions
from hashgnn.data.features import FeatureEncoder, read_feature_table
from hashgnn.data.recbole import read_atomic
from hashgnn.errors import DataError, DataWarning

N_USERS, N_ITEMS = 60, 40


def write_atomic(folder: Path, seed: int = 0) -> Path:
    """A small RecBole data set: every user rates 12 items; users have age/gender, items genres and a price."""
    rng = np.random.default_rng(seed)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(N_USERS):
        for j, i in enumerate(rng.choice(N_ITEMS, 12, replace=False)):
            lines.append(f"u{u}\ti{i}\t{1 + (u + i) % 5}\t{1000 + 10 * u + j}")
    (folder / "toy.inter").write_text("\n".join(lines) + "\n")
    users = ["user_id:token\tage:float\tgender:token"] + [
        f"u{u}\t{20 + u % 30}\t{'MF'[u % 2]}"
        for u in range(N_USERS - 1)  # the last user has no row
    ]
    (folder / "toy.user").write_text("\n".join(users) + "\n")
    genres = ["Action", "Comedy", "Drama", "Horror"]
    items = ["item_id:token\tgenre:token_seq\tprice:float\tvec:float_seq"] + [
        f"i{i}\t{genres[i % 4]} {genres[(i + 1) % 4]}\t{'' if i == 3 else i * 1.5}\t0.1 0.2" for i in range(N_ITEMS)
    ]
    (folder / "toy.item").write_text("\n".join(items) + "\n")
    return folder / "toy.inter"


def test_inter_columns_are_mapped_by_name_and_the_split_uses_the_timestamp(tmp_path: Path) -> None:
    inter = write_atomic(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # float_seq is not used: warned
        data = load_interactions(DataConfig(dataset=str(inter), split="temporal", test_fraction=0.25))
    assert (data.n_users, data.n_items) == (N_USERS, N_ITEMS)
    assert data.train.nnz + data.test.nnz == N_USERS * 12
    assert data.meta["format"] == "recbole"
    # Temporal: each user's last 3 interactions (by timestamp) are in test.
    atomic = read_atomic(inter)
    frame = atomic.frame
    u0 = frame[frame["user_id"] == "u0"].sort_values("timestamp", key=lambda s: s.astype(float))
    last = set(u0["item_id"].iloc[-3:])
    uid = int(np.flatnonzero(data.user_ids == "u0")[0])
    got = {str(data.item_ids[i]) for i in data.test[uid].indices}
    assert got == last
    # --min-rating keeps rows with rating >= 4 only.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        strict = load_interactions(DataConfig(dataset=str(inter), min_rating=4))
    assert strict.train.nnz + strict.test.nnz == int((frame["rating"].astype(float) >= 4).sum())


def test_siblings_give_attributes_encoded_for_the_input_encoder(tmp_path: Path) -> None:
    inter = write_atomic(tmp_path)
    with pytest.warns(DataWarning, match="float_seq"):
        data = load_interactions(DataConfig(dataset=str(inter)))
    uf, itf = data.user_features, data.item_features
    assert uf is not None and itf is not None
    assert uf.types == {"age": "float", "gender": "token"} and uf.n_matched == N_USERS - 1
    assert itf.types == {"genre": "token_seq", "price": "float"}
    enc = FeatureEncoder.fit(uf)
    attrs = enc.transform(uf)
    assert attrs.categorical.shape == (N_USERS, 1) and attrs.cardinalities == [3]  # F, M and "missing"
    age = attrs.numeric[:, 0].numpy()
    last = int(np.flatnonzero(data.user_ids == f"u{N_USERS - 1}")[0])
    assert attrs.categorical[last, 0] == 0 and age[last] == 0.0  # no row: missing category, mean age
    known = np.delete(age, last)
    assert abs(known.mean()) < 1e-5 and abs(known.std() - 1) < 1e-4  # standardised
    item_attrs = FeatureEncoder.fit(itf).transform(itf)
    assert item_attrs.categorical is None and item_attrs.numeric.shape == (N_ITEMS, 4 + 1)
    i5 = int(np.flatnonzero(data.item_ids == "i5")[0])
    assert item_attrs.numeric[i5, :4].tolist() == [0.0, 1.0, 1.0, 0.0]  # Action, Comedy, Drama, Horror
    off = load_interactions(DataConfig(dataset=str(inter), atomic_features=False))
    assert off.user_features is None and off.item_features is None


def test_encoders_round_trip_and_encode_new_nodes_the_same_way(tmp_path: Path) -> None:
    inter = write_atomic(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        data = load_interactions(DataConfig(dataset=str(inter)))
    enc = FeatureEncoder.fit(data.user_features)
    again = FeatureEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert again == enc
    new = tmp_path / "new_users.csv"
    new.write_text("user_id,age,gender\nx1,35,F\nx2,,X\n")
    feats = read_feature_table(new, "user", None, np.array(["x1", "x2"]), 2)
    a = again.transform(feats)
    col = enc.columns[0] if enc.columns[0].name == "age" else enc.columns[1]
    assert a.numeric[0, 0] == pytest.approx((35 - col.mean) / col.std)
    assert a.numeric[1, 0] == 0.0  # missing -> the training mean
    gender = next(c for c in enc.columns if c.name == "gender")
    assert a.categorical[:, 0].tolist() == [gender.vocab.index("F") + 1, 0]  # an unseen category -> 0


def test_typed_header_and_value_errors_name_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.inter"
    bad.write_text("user_id:token\titem_id:tokn\nu1\ti1\n")
    with pytest.raises(DataError, match=r"bad.inter, line 1: column 2 of the header is 'item_id:tokn'"):
        read_atomic(bad)
    bad.write_text("user_id:token\titem_id:token\trating:float\nu1\ti1\t4\n\nu2\ti2\tfive\n")
    with pytest.raises(DataError, match=r"bad.inter, line 4: column 'rating' is declared float but holds 'five'"):
        read_atomic(bad)
    bad.write_text("uid:token\tiid:token\nu1\ti1\n")
    with pytest.raises(DataError, match=r"has no user column 'user_id'.*--user-col"):
        load_interactions(DataConfig(dataset=str(bad)))
    ok = load_interactions(DataConfig(dataset=str(bad), user_col="uid:token", item_col="iid", test_fraction=0.2))
    assert ok.n_users == 1


def test_features_from_a_csv_for_any_source(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("user,item\n" + "".join(f"{u},{i}\n" for u in range(10) for i in range(u % 3, 8)))
    (tmp_path / "items.csv").write_text("item,price,brand\n" + "".join(f"{i},{i * 2},b{i % 2}\n" for i in range(8)))
    data = load_interactions(DataConfig(dataset=str(table), item_features=str(tmp_path / "items.csv")))
    assert data.item_features.types == {"price": "float", "brand": "token"}
    assert data.user_features is None


def test_train_with_attributes_saves_encoders_and_the_run_reloads_them(tmp_path: Path) -> None:
    import hashgnn as hg
    from hashgnn.train.run import train_run

    inter = write_atomic(tmp_path)
    cfg = RunConfig.from_dict(
        {
            "data": {"dataset": str(inter), "valid_fraction": 0.0},
            "model": {"bits": 16, "id_dim": 8, "input_dim": 8, "hidden_dim": 8, "user_fanouts": [3, 2]},
            "train": {"epochs": 1, "batch_size": 256, "negatives": 1, "device": "cpu", "threads": 1},
            "eval": {"ks": [10], "candidates": 20},
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        train_run(cfg, tmp_path / "run", progress=False)
        run = hg.Run.load(tmp_path / "run")
        model = run.model(device="cpu")
        encoders, attrs = run.attributes()
    assert set(encoders) == {"user", "item"}
    from hashgnn.model.inputs import InputEncoder

    inputs = [m for m in model.modules() if isinstance(m, InputEncoder)]
    assert sorted(len(e.cat_embs) for e in inputs) == [0, 1]  # users: gender embedded; items: numbers only
    assert sorted(0 if e.numeric is None else e.numeric.shape[1] for e in inputs) == [1, 5]
    assert attrs["item"].numeric.shape == (N_ITEMS, 5)

    # The same run with mf: attributes cannot enter; a warning says so and nothing is saved.
    cfg.model.method = "mf"
    with pytest.warns(DataWarning, match="not used by method mf"):
        train_run(cfg, tmp_path / "mf", progress=False)
    assert not (tmp_path / "mf" / "features.json").exists()


def test_data_info_reads_an_inter_file(tmp_path: Path) -> None:
    inter = write_atomic(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "hashgnn", "data", "info", str(inter), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["n_users"] == N_USERS and info["format"] == "recbole"
    assert info["item_attributes"]["columns"] == {"genre": "token_seq", "price": "float"}
