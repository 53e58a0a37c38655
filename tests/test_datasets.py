"""Your own data: CSV/NPZ reading, the kind inferred from the data, standardisation and the
seeded split, the CLI's --data/--targets, bundles that carry the data, and bad files refused
whole with a specific message and nothing created."""
import io
import zipfile

import numpy as np
import pytest

from hflab import bundles, datasets
from hflab.cli import main
from hflab.store import Store, default_home


def csv_text(header, rows):
    return (",".join(header) + "\n" + "\n".join(",".join(map(str, r)) for r in rows)).encode()


def npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


RNG = np.random.default_rng(0)
X = RNG.normal(size=(50, 3))


def test_the_kind_follows_the_data():
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)
    cls = datasets.read(csv_text(["a", "b", "c", "label"], np.c_[X, labels]), "c.csv", "label")
    assert cls.kind == "classification" and cls.loss == "softmax"
    np.testing.assert_array_equal(cls.y.argmax(1), labels)
    assert cls.y.shape == (50, labels.max() + 1) and cls.columns == (("a", "b", "c"), ("label",))
    reg = datasets.read(csv_text(["a", "b", "c", "t"], np.c_[X, X[:, 0] * 0.5]), "r.csv", "3")
    assert reg.kind == "regression" and reg.y.shape == (50, 1) and reg.loss == "squared"
    ae = datasets.read(csv_text(["a", "b", "c"], X), "a.csv")
    assert ae.kind == "autoencoder" and np.array_equal(ae.y, ae.x)
    same = datasets.read(npz_bytes(x=X, y=X), "same.npz")
    assert same.kind == "autoencoder"
    ints = datasets.read(npz_bytes(x=X, y=labels.astype(np.int32)), "i.npz")
    assert ints.kind == "classification" and ints.y.shape[1] == labels.max() + 1
    # two target columns of whole numbers are a regression, not classes
    two = datasets.read(npz_bytes(x=X, y=np.c_[labels, labels]), "two.npz")
    assert two.kind == "regression"


def test_split_is_seeded_and_standardised_on_training_cases_only():
    reg = datasets.read(npz_bytes(x=X * 5 + 3, y=X[:, :1] * 2 + 7), "r.npz")
    total, n_test = datasets.sizes(reg)
    assert (total, n_test) == (50, 10)
    (x, y), (xt, yt) = datasets.split(reg, seed=1, n_train=40, n_test=10)
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(x.std(0), 1, atol=1e-12)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-12)
    assert abs(xt.mean()) > 1e-6                      # test cases use the training statistics
    (x2, _), _ = datasets.split(reg, seed=1, n_train=40, n_test=10)
    (x3, _), _ = datasets.split(reg, seed=2, n_train=40, n_test=10)
    np.testing.assert_array_equal(x, x2)
    assert not np.array_equal(x, x3)
    given = datasets.read(npz_bytes(x=X[:30], y=X[:30, :1], x_test=X[30:], y_test=X[30:, :1]),
                          "g.npz")
    assert datasets.sizes(given) == (50, 20)
    (_, _), (xt, _) = datasets.split(given, seed=5, n_train=30, n_test=20)
    assert xt.shape == (20, 3)


BAD_FILES = [
    ("semi.csv", b"a;b;c\n1;2;3\n4;5;6\n", "", "split by semicolons, not commas"),
    ("tab.csv", b"a\tb\n1\t2\n3\t4\n", "", "split by tabs"),
    ("ragged.csv", b"a,b,c\n1,2,3\n4,5\n", "", "row 3 has 2 cells but the header has 3"),
    ("text.csv", b"a,b\n1,2\n3,abc\n", "", "row 3, column 'b': 'abc' is not a number"),
    ("nan.csv", b"a,b\n1,2\n3,NaN\n", "", "row 3, column 'b': 'NaN' — missing"),
    ("blank.csv", b"a,b\n1,2\n3,\n", "", "row 3, column 'b': '' — missing"),
    ("empty.csv", b"", "", "the file is empty"),
    ("one.csv", b"a,b\n1,2\n", "", "1 case(s); at least 2 are needed"),
    ("dup.csv", b"a,a\n1,2\n3,4\n", "", "distinct, non-empty name per column"),
    ("target.csv", b"a,b\n1,2\n3,4\n", "c", "targets: 'c' is not a column"),
    ("all.csv", b"a,b\n1,2\n3,4\n", "a,b", "every column is a target"),
    ("latin.csv", "a,é\n1,2\n3,4\n".encode("latin-1"), "", "not UTF-8 text"),
    ("len.npz", npz_bytes(x=X, y=X[:10, :1]), "", "y has 10 cases but x has 50"),
    ("inf.npz", npz_bytes(x=np.r_[X, [[np.inf, 0, 0]]]), "", "x: entry (50, 0) is inf"),
    ("noX.npz", npz_bytes(inputs=X), "", "expected x and optionally y"),
    ("obj.npz", npz_bytes(x=np.array([{"a": 1}, None], dtype=object)), "",
     "not a readable .npz file"),
    ("str.npz", npz_bytes(x=np.array([["a", "b"], ["c", "d"]])), "", "is not numeric"),
    ("cube.npz", npz_bytes(x=np.zeros((4, 2, 2))), "", "expected (cases, features)"),
    ("half.npz", npz_bytes(x=X, y=X[:, :1], x_test=X), "", "give both x_test and y_test"),
    ("garbage.npz", b"PK\x03\x04 not really", "", "not a readable .npz file"),
    ("targets.npz", npz_bytes(x=X), "y", "targets: only for CSV files"),
    ("data.xlsx", b"whatever", "", "unknown file type '.xlsx'"),
]


@pytest.mark.parametrize("name,data,targets,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused_with_a_specific_message_and_create_nothing(
        name, data, targets, message, tmp_path, capsys):
    with pytest.raises(datasets.DataError) as e:
        datasets.read(data, name, targets)
    assert message in str(e.value)
    path = tmp_path / name
    path.write_bytes(data)
    args = ["run", "--data", str(path), "--steps", "1", "--quiet"]
    assert main(args + (["--targets", targets] if targets else [])) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (default_home() / "datasets").exists()
    assert not (default_home() / "hflab.sqlite").exists() or Store().runs().empty


def test_files_over_the_size_cap_are_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "MAX_BYTES", 1000)
    path = tmp_path / "big.csv"
    path.write_bytes(csv_text(["a", "b"], RNG.normal(size=(100, 2))))
    with pytest.raises(datasets.DataError, match="at most 0 MiB"):
        datasets.read_path(str(path))


def test_cli_trains_on_a_csv_and_the_run_survives_a_new_process_and_a_bundle(tmp_path,
                                                                             capsys,
                                                                             monkeypatch):
    path = tmp_path / "mine.csv"
    labels = (X[:, 0] > 0).astype(int)
    path.write_bytes(csv_text(["a", "b", "c", "y"], np.c_[X, labels]))
    assert main(["run", "--data", str(path), "--targets", "y", "--steps", "3", "--quiet",
                 "--damping", "1"]) == 0
    store = Store()
    run = store.get_run(1)
    ds_id = run["config"]["data"]
    assert run["status"] == "finished" and run["config"]["task"] == "custom"
    assert (default_home() / "datasets" / f"{ds_id}.npz").is_file()
    datasets._KNOWN.clear()                       # a fresh process reads it from the store
    assert datasets.get(ds_id).kind == "classification"
    bundle = tmp_path / "b.zip"
    bundles.export(store, [1], bundle)
    assert f"datasets/{ds_id}.npz" in zipfile.ZipFile(bundle).namelist()
    datasets._KNOWN.clear()
    monkeypatch.setenv("HFLAB_HOME", str(tmp_path / "other"))
    other = Store()
    assert bundles.import_bundle(other, bundle) == [1]
    assert (tmp_path / "other" / "datasets" / f"{ds_id}.npz").is_file()
    # a bundle whose data set does not match its id is refused whole
    tampered = tmp_path / "t.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item.startswith("datasets/"):
                data = npz_bytes(meta=np.array('{"name": "x", "kind": "regression"}'), x=X, y=X)
            dst.writestr(item, data)
    datasets._KNOWN.clear()
    monkeypatch.setenv("HFLAB_HOME", str(tmp_path / "third"))
    with pytest.raises(bundles.BundleError, match="do not match its id"):
        bundles.import_bundle(Store(), tampered)
    assert Store().runs().empty
