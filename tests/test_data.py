"""Tests for seqnorm.data: the copy, adding and (permuted) sequential MNIST benchmarks."""

from __future__ import annotations

import gzip
import io
import math
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import MNIST_DIR as SHARED_MNIST  # noqa: E402

from seqnorm.data import (
    ADDING_BASELINE,
    AddingDataModule,
    AddingDataset,
    CopyMemoryDataModule,
    CopyMemoryDataset,
    MNISTSequenceDataset,
    PermutedMNISTDataModule,
    SequenceDataModule,
    SequentialMNISTDataModule,
    SyntheticDataModule,
    copy_baseline,
    data_dir_candidates,
    mnist_files,
    mnist_permutation,
    prepare_mnist,
    read_idx,
    resolve_data_dir,
)

MNIST_NAMES = [name for name, _ in mnist_files.MNIST_FILES.values()]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never download: any real urlopen call fails the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        pytest.fail(f"test attempted network access: urlopen{args}")

    monkeypatch.setattr(urllib.request, "urlopen", forbidden)


def write_idx(path: Path, array: np.ndarray, gz: bool = False, magic: int | None = None) -> Path:
    """Write a uint8 array as an IDX file (optionally gzip-compressed)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def stack(dataset: torch.utils.data.Dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(n)), strict=True)
    return torch.stack(xs), torch.stack(ys)


# --------------------------------------------------------------------------- copy


@pytest.mark.parametrize("T", [1, 7, 100])
def test_copy_sample_layout(T: int) -> None:
    ds = CopyMemoryDataset(seq_len=T, size=50, seed=3)
    x, y = stack(ds, 50)  # (N, L)
    assert x.dtype == torch.long and y.dtype == torch.long
    assert x.shape == y.shape == (50, T + 20)
    symbols = x[:, :10]
    assert symbols.min() >= 1 and symbols.max() <= 8
    assert (x[:, 10 : T + 10] == 0).all()
    assert (x[:, T + 10] == 9).all()
    assert (x[:, T + 11 :] == 0).all()
    assert (y[:, : T + 10] == 0).all()
    assert torch.equal(y[:, T + 10 :], symbols)


def test_copy_symbols_uniform() -> None:
    x, _ = stack(CopyMemoryDataset(seq_len=1, size=4000, seed=5), 4000)
    counts = torch.bincount(x[:, :10].reshape(-1), minlength=10).double()
    n = 40000
    expected = n / 8
    sd = math.sqrt(n * (1 / 8) * (7 / 8))
    assert counts[0] == 0 and counts[9] == 0
    assert (counts[1:9] - expected).abs().max() < 5 * sd


def test_copy_baseline_from_data() -> None:
    T = 30
    n = 2000
    _, y = stack(CopyMemoryDataset(seq_len=T, size=n, seed=11), n)  # (N, L)
    formula = 10 * math.log(8) / (T + 20)
    assert copy_baseline(T) == pytest.approx(formula)
    assert CopyMemoryDataModule(seq_len=T).baseline == pytest.approx(formula)
    # The memoryless predictor: blank with certainty, then uniform over the eight symbols.
    logits = torch.full((T + 20, 9), -math.inf)
    logits[: T + 10, 0] = 0.0
    logits[T + 10 :, 1:] = 0.0
    ce = F.cross_entropy(logits.expand(n, -1, -1).reshape(-1, 9), y.reshape(-1))
    assert ce.item() == pytest.approx(formula, rel=1e-6)
    # The best memoryless predictor fitted to the data: per-step empirical frequencies.
    freq = torch.stack([torch.bincount(y[:, t], minlength=9) for t in range(T + 20)]) / n
    ce_fit = -(freq * torch.log(freq.clamp_min(1e-12))).sum(1).mean()
    assert ce_fit.item() == pytest.approx(formula, rel=0.01)


def test_copy_determinism_by_index() -> None:
    a = CopyMemoryDataset(seq_len=10, size=100, seed=7, split="train")
    b = CopyMemoryDataset(seq_len=10, size=100, seed=7, split="train")
    for i in (0, 1, 57, 99):
        assert torch.equal(a[i][0], a[i][0])
        assert torch.equal(a[i][0], b[i][0])
    assert torch.equal(a[-1][0], a[99][0])
    xa, _ = stack(a, 20)
    assert len({tuple(row.tolist()) for row in xa}) == 20  # neighbouring indices differ
    other_seed, _ = stack(CopyMemoryDataset(seq_len=10, size=100, seed=8), 20)
    other_split, _ = stack(CopyMemoryDataset(seq_len=10, size=100, seed=7, split="val"), 20)
    assert not torch.equal(xa, other_seed)
    assert not torch.equal(xa, other_split)
    with pytest.raises(IndexError, match="out of range"):
        a[100]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seq_len": 0, "size": 1}, "seq_len must be >= 1, got 0"),
        ({"seq_len": 5, "size": 0}, "size must be >= 1, got 0"),
        ({"seq_len": 5, "size": 1, "split": "dev"}, "split must be one of"),
        ({"seq_len": 5, "size": 1, "seed": 1.5}, "seed must be an int"),
    ],
)
def test_copy_dataset_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CopyMemoryDataset(**kwargs)


def test_copy_datamodule() -> None:
    dm = CopyMemoryDataModule(seq_len=5, batch_size=4, num_train=10, num_val=6, num_test=3)
    assert (dm.input_kind, dm.input_dim, dm.output_kind) == ("tokens", 10, "per_step_class")
    assert (dm.num_classes, dm.input_len, dm.delay) == (9, 25, 5)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 25) and x.dtype == y.dtype == torch.long
    assert len(dm.val_dataloader().dataset) == 6
    assert sum(len(b[0]) for b in dm.test_dataloader()) == 3
    loader = dm.train_dataloader()
    assert loader.pin_memory is False and loader.persistent_workers is False
    # The training shuffle is seeded: a fresh module yields the same first batch.
    again = CopyMemoryDataModule(seq_len=5, batch_size=4, num_train=10, num_val=6, num_test=3)
    again.setup("fit")
    assert torch.equal(next(iter(again.train_dataloader()))[0], x)
    # Splits never share samples.
    train, _ = stack(dm.train_dataset, 6)
    val, _ = stack(dm.val_dataset, 6)
    assert not torch.equal(train, val)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seq_len": 0}, "seq_len must be >= 1, got 0"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"num_train": 0}, "num_train must be >= 1, got 0"),
        ({"num_val": -1}, "num_val must be >= 1, got -1"),
        ({"num_test": 0}, "num_test must be >= 1, got 0"),
        ({"num_workers": -1}, "num_workers must be >= 0, got -1"),
    ],
)
def test_copy_datamodule_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CopyMemoryDataModule(**kwargs)


# --------------------------------------------------------------------------- adding


@pytest.mark.parametrize("T", [2, 3, 11, 200])
def test_adding_sample_layout(T: int) -> None:
    ds = AddingDataset(seq_len=T, size=100, seed=2)
    x, y = ds[0]
    assert x.shape == (T, 2) and x.dtype == torch.float32
    assert y.shape == () and y.dtype == torch.float32
    xs, ys = stack(ds, 100)  # (N, T, 2), (N,)
    values, markers = xs[..., 0], xs[..., 1]
    assert values.min() >= 0 and values.max() < 1
    assert ((markers == 0) | (markers == 1)).all()
    assert (markers[:, : T // 2].sum(1) == 1).all()
    assert (markers[:, T // 2 :].sum(1) == 1).all()
    torch.testing.assert_close(ys, (values * markers).sum(1))


def test_adding_marker_positions_cover_each_half() -> None:
    T = 10
    xs, _ = stack(AddingDataset(seq_len=T, size=500, seed=4), 500)
    hits = xs[..., 1].sum(0)  # (T,)
    assert (hits > 0).all()  # every position of both halves gets marked sometimes
    assert hits[: T // 2].sum() == hits[T // 2 :].sum() == 500


def test_adding_baseline_from_data() -> None:
    n = 4000
    _, y = stack(AddingDataset(seq_len=20, size=n, seed=9), n)
    mse = ((y - 1.0) ** 2).mean().item()
    # Var((S - 1)^2) = E[(S-1)^4] - (1/6)^2 = 1/15 - 1/36 = 7/180 for S a sum of two U(0,1).
    se = math.sqrt(7 / 180 / n)
    assert ADDING_BASELINE == pytest.approx(1 / 6)
    assert AddingDataModule().baseline == pytest.approx(1 / 6)
    assert abs(mse - 1 / 6) < 5 * se
    assert abs(y.mean().item() - 1.0) < 5 * math.sqrt(1 / 6 / n)


def test_adding_determinism_by_index() -> None:
    a = AddingDataset(seq_len=16, size=10, seed=1)
    b = AddingDataset(seq_len=16, size=10, seed=1)
    assert torch.equal(a[3][0], a[3][0])
    assert torch.equal(a[3][0], b[3][0]) and torch.equal(a[3][1], b[3][1])
    assert not torch.equal(a[3][0], a[4][0])
    assert not torch.equal(a[3][0], AddingDataset(16, 10, seed=2)[3][0])
    assert not torch.equal(a[3][0], AddingDataset(16, 10, seed=1, split="test")[3][0])


def test_adding_errors() -> None:
    with pytest.raises(ValueError, match="seq_len must be >= 2, got 1"):
        AddingDataset(seq_len=1, size=4)
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        AddingDataset(seq_len=4, size=0)
    with pytest.raises(ValueError, match="seq_len must be >= 2, got 1"):
        AddingDataModule(seq_len=1)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        AddingDataModule(batch_size=0)


def test_adding_datamodule() -> None:
    dm = AddingDataModule(seq_len=12, batch_size=5, num_train=20, num_val=7, num_test=4)
    assert (dm.input_kind, dm.input_dim, dm.output_kind) == ("features", 2, "last_regression")
    assert (dm.num_classes, dm.seq_len) == (1, 12)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 12, 2) and x.dtype == torch.float32
    assert y.shape == (5,) and y.dtype == torch.float32
    assert sum(len(b[1]) for b in dm.val_dataloader()) == 7
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 4


# --------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    labels = np.array([5, 0, 4, 1], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    got_images = read_idx(write_idx(tmp_path / f"img{suffix}", images, gz=gz))
    got_labels = read_idx(write_idx(tmp_path / f"lbl{suffix}", labels, gz=gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (3, 4, 5)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.flags.writeable


def test_read_idx_header_bytes(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))  # hand-written: 3 labels
    np.testing.assert_array_equal(read_idx(path), [7, 8, 9])


def test_read_idx_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "absent")
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    good = write_idx(tmp_path / "good", images).read_bytes()
    (tmp_path / "short").write_bytes(good[:-10])
    with pytest.raises(ValueError, match=r"short.*truncated IDX file.*expected 1584 bytes"):
        read_idx(tmp_path / "short")
    (tmp_path / "header").write_bytes(good[:9])
    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx(tmp_path / "header")
    (tmp_path / "long").write_bytes(good + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(tmp_path / "long")
    write_idx(tmp_path / "magic", images, magic=0x12345678)
    with pytest.raises(ValueError, match=r"magic.*bad IDX magic number 0x12345678"):
        read_idx(tmp_path / "magic")
    gz = gzip.compress(good)
    (tmp_path / "cut.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz: corrupt or truncated gzip"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="too short for the magic number"):
        read_idx(tmp_path / "tiny")


# --------------------------------------------------------------------------- MNIST


def test_permutation_convention() -> None:
    expected = np.random.RandomState(92916).permutation(784)
    np.testing.assert_array_equal(mnist_permutation(), expected)
    np.testing.assert_array_equal(PermutedMNISTDataModule().permutation, expected)
    np.testing.assert_array_equal(SequentialMNISTDataModule(permute=True).permutation, expected)
    assert SequentialMNISTDataModule().permutation is None
    other = PermutedMNISTDataModule(permutation_seed=1).permutation
    np.testing.assert_array_equal(other, np.random.RandomState(1).permutation(784))


def test_mnist_sequence_dataset() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = np.arange(6, dtype=np.uint8)
    perm = mnist_permutation()
    seq = MNISTSequenceDataset(images, labels)
    permuted = MNISTSequenceDataset(images, labels, permutation=perm)
    x, y = seq[0]
    assert x.shape == (784, 1) and x.dtype == torch.float32
    assert y.shape == () and y.dtype == torch.int64
    assert x[0, 0] == 0.0 and x[1, 0] == 1.0
    for i in range(6):
        xs, ys = seq[i]
        xp, yp = permuted[i]
        torch.testing.assert_close(xs[:, 0], torch.from_numpy(images[i].reshape(-1)) / 255.0)
        assert torch.equal(xp[:, 0], xs[perm, 0])
        assert int(ys) == int(yp) == i


def test_mnist_sequence_dataset_errors() -> None:
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        MNISTSequenceDataset(images, np.zeros(2, dtype=np.uint8))
    with pytest.raises(ValueError, match="images must be uint8"):
        MNISTSequenceDataset(images.astype(np.float32), np.zeros(3))
    with pytest.raises(ValueError, match=r"images must have shape \(N, 28, 28\)"):
        MNISTSequenceDataset(np.zeros((3, 10), dtype=np.uint8), np.zeros(3))
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        MNISTSequenceDataset(images, np.array([0, 1, 10]))
    with pytest.raises(ValueError, match=r"permutation must be a permutation of range\(784\)"):
        MNISTSequenceDataset(images, np.zeros(3), permutation=np.zeros(784, dtype=int))


def write_tiny_mnist(folder: Path, n_train: int = 20, n_test: int = 8) -> None:
    """Four tiny IDX files; train image k has pixel 0 == k so samples can be identified."""
    rng = np.random.default_rng(2)
    train = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    train[:, 0, 0] = np.arange(n_train)
    test = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte.gz", train, gz=True)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(n_train) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte", test)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10, gz=True)


def ids(dataset: MNISTSequenceDataset) -> list[int]:
    return sorted(int(k) for k in dataset.images[:, 0])


def test_mnist_datamodule_tiny(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path)
    dm = SequentialMNISTDataModule(data_dir=str(tmp_path), batch_size=4, val_size=5)
    assert (dm.input_kind, dm.input_dim, dm.output_kind) == ("features", 1, "last_class")
    assert (dm.num_classes, dm.seq_len, dm.baseline) == (10, 784, None)
    dm.prepare_data()  # files present: nothing to download (urlopen is forbidden)
    dm.setup("fit")
    assert len(dm.train_dataset) == 15 and len(dm.val_dataset) == 5
    assert sorted(ids(dm.train_dataset) + ids(dm.val_dataset)) == list(range(20))
    assert dm.test_dataset is None
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 784, 1) and x.dtype == torch.float32
    assert y.shape == (4,) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    dm.setup("test")
    assert len(dm.test_dataset) == 8
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 8
    # The split is a pure function of split_seed.
    same = SequentialMNISTDataModule(data_dir=str(tmp_path), val_size=5)
    same.setup("fit")
    assert ids(same.val_dataset) == ids(dm.val_dataset)
    other = SequentialMNISTDataModule(data_dir=str(tmp_path), val_size=5, split_seed=99)
    other.setup("fit")
    assert ids(other.val_dataset) != ids(dm.val_dataset)


def test_mnist_datamodule_tiny_permuted_and_limited(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path)
    seq = SequentialMNISTDataModule(data_dir=str(tmp_path), val_size=5, limit_train=3)
    perm = PermutedMNISTDataModule(data_dir=str(tmp_path), val_size=5, limit_train=3)
    seq.setup()
    perm.setup()
    assert len(seq.train_dataset) == 3 and len(seq.val_dataset) == 5
    for i in range(3):
        assert torch.equal(perm.train_dataset[i][0], seq.train_dataset[i][0][perm.permutation])
    assert torch.equal(perm.test_dataset[0][0], seq.test_dataset[0][0][perm.permutation])


def test_mnist_datamodule_errors(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path)
    dm = SequentialMNISTDataModule(data_dir=str(tmp_path), val_size=20)
    with pytest.raises(ValueError, match=r"val_size must be in \[1, 19\] for 20 .*got 20"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="val_size must be >= 1, got 0"):
        SequentialMNISTDataModule(val_size=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        PermutedMNISTDataModule(batch_size=0)
    with pytest.raises(ValueError, match="limit_train must be >= 1, got 0"):
        SequentialMNISTDataModule(limit_train=0)
    bad = tmp_path / "bad"
    bad.mkdir()
    write_tiny_mnist(bad)
    write_idx(bad / "train-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8))
    with pytest.raises(ValueError, match="expected 20 uint8 labels"):
        SequentialMNISTDataModule(data_dir=str(bad), val_size=5).setup("fit")


def test_mnist_missing_files_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def offline(url: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data_dir = tmp_path / "empty"
    (data_dir).mkdir()
    write_idx(data_dir / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    dm = SequentialMNISTDataModule(data_dir=str(data_dir))
    with pytest.raises(FileNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    for name in MNIST_NAMES[:3]:
        assert name in message
    assert f"{MNIST_NAMES[3]}," not in message  # present, so not listed as missing
    assert str(data_dir.absolute()) in message
    assert "no network" in message and "data_dir" in message
    assert "Place the four IDX files" in message
    # Each mirror was tried once, then skipped as unreachable for the other files.
    assert calls == [m + "train-images-idx3-ubyte.gz" for m in mnist_files.MNIST_MIRRORS]
    assert not list(data_dir.glob("*.part"))
    # download=False: no attempt at all, and setup() without prepare_data says the same.
    calls.clear()
    offline_dm = SequentialMNISTDataModule(data_dir=str(data_dir), download=False)
    with pytest.raises(FileNotFoundError, match=r"download=False[\s\S]*pass data_dir"):
        offline_dm.prepare_data()
    with pytest.raises(FileNotFoundError, match="MNIST files missing from"):
        offline_dm.setup("fit")
    assert calls == []


def serve(files: dict[str, bytes], calls: list[str]):
    """A fake urlopen serving ``files`` by basename."""

    def fake_urlopen(url: str, *args: object, **kwargs: object) -> io.BytesIO:
        calls.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)  # type: ignore[arg-type]
        return io.BytesIO(files[name])

    return fake_urlopen


def test_mnist_download_rejects_bad_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = gzip.compress(b"not mnist")
    files = {f"{name}.gz": fake for name in MNIST_NAMES}
    calls: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", serve(files, calls))
    with pytest.raises(FileNotFoundError, match="MD5 of decompressed content"):
        prepare_mnist(tmp_path / "dl")
    assert len(calls) == 2 * len(MNIST_NAMES)  # both mirrors tried for every file
    assert list((tmp_path / "dl").iterdir()) == []  # nothing half-written left behind


def test_mnist_download_verifies_and_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"real MNIST files not found in {SHARED_MNIST}")
    files = {f"{name}.gz": (SHARED_MNIST / f"{name}.gz").read_bytes() for name in MNIST_NAMES}
    calls: list[str] = []
    monkeypatch.setattr(urllib.request, "urlopen", serve(files, calls))
    paths = prepare_mnist(tmp_path / "dl")
    assert len(calls) == 4 and all(c.startswith(mnist_files.MNIST_MIRRORS[0]) for c in calls)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(files)
    assert paths["train_labels"].read_bytes() == files["train-labels-idx1-ubyte.gz"]


@pytest.fixture(scope="module")
def real_mnist() -> SequentialMNISTDataModule:
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"real MNIST files not found in {SHARED_MNIST}")
    dm = SequentialMNISTDataModule(data_dir=str(SHARED_MNIST), download=False)
    dm.prepare_data()
    dm.setup()
    return dm


def test_real_mnist_first_labels() -> None:
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"real MNIST files not found in {SHARED_MNIST}")
    labels = read_idx(SHARED_MNIST / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_real_mnist_split(real_mnist: SequentialMNISTDataModule) -> None:
    dm = real_mnist
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (
        55000,
        5000,
        10000,
    )
    # Train and val partition the official training set: class counts add up exactly.
    counts = torch.bincount(dm.train_dataset.labels, minlength=10) + torch.bincount(
        dm.val_dataset.labels, minlength=10
    )
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert counts.tolist() == train_counts
    assert torch.bincount(dm.test_dataset.labels, minlength=10).tolist() == test_counts
    mean = dm.train_dataset.images.double().mean().item() / 255
    assert mean == pytest.approx(0.1307, abs=2e-3)
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (128, 784, 1) and x.dtype == torch.float32
    assert y.shape == (128,) and y.dtype == torch.int64


# -- one base, the same public arguments ------------------------------------------------------
MNIST_DEFAULTS = {"batch_size": 128, "permutation_seed": 92916, "val_size": 5000,
                  "split_seed": 1234, "download": True, "num_workers": 0,
                  "limit_train": None}  # fmt: skip
CLI_DEFAULTS = {
    "CopyMemoryDataModule": {"seq_len": 100, "batch_size": 128, "num_train": 12800,
                             "num_val": 1280, "num_test": 1280, "seed": 1234, "num_workers": 0},
    "AddingDataModule": {"seq_len": 200, "batch_size": 50, "num_train": 10000,
                         "num_val": 1000, "num_test": 1000, "seed": 1234, "num_workers": 0},
    "SequentialMNISTDataModule": {"data_dir": "data/mnist", "permute": False, **MNIST_DEFAULTS},
    "PermutedMNISTDataModule": {"data_dir": "data/mnist", "permute": True, **MNIST_DEFAULTS},
}  # fmt: skip


def test_datamodules_share_one_base() -> None:
    for cls in (CopyMemoryDataModule, AddingDataModule):
        assert issubclass(cls, SyntheticDataModule)
        for name in ("setup", "train_dataloader", "val_dataloader", "test_dataloader"):
            assert name not in vars(cls), (cls.__name__, name)  # inherited, not repeated
    for cls in (SequentialMNISTDataModule, PermutedMNISTDataModule):
        assert issubclass(cls, SequenceDataModule)
        for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
            assert name not in vars(cls), (cls.__name__, name)
    assert set(vars(PermutedMNISTDataModule)) <= {"__init__", "__doc__", "__module__"}


@pytest.mark.parametrize("name", sorted(CLI_DEFAULTS))
def test_cli_sees_the_same_arguments(name: str) -> None:
    """LightningCLI reads the signatures: the same names and defaults as before the base."""
    from jsonargparse import ArgumentParser

    import seqnorm.data

    parser = ArgumentParser()
    parser.add_class_arguments(getattr(seqnorm.data, name), "data")
    assert dict(parser.get_defaults().data) == CLI_DEFAULTS[name]


def test_permuted_keeps_positional_arguments(tmp_path: Path) -> None:
    dm = PermutedMNISTDataModule(str(tmp_path), 32)
    assert (dm.data_dir, dm.batch_size, dm.permute) == (str(tmp_path), 32, True)
    assert PermutedMNISTDataModule(permute=False).permutation is None


# -- where data_dir is looked for ----------------------------------------------------------------
def test_data_dir_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shelf, config_dir, cwd = tmp_path / "shelf", tmp_path / "repo/configs", tmp_path / "cwd"
    for d in (shelf, config_dir, cwd):
        d.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SEQNORM_DATA", str(shelf))
    rel = "../data/mnist"
    assert data_dir_candidates(rel, [config_dir]) == [
        shelf / "mnist",  # $SEQNORM_DATA/<last name>
        tmp_path / "repo/data/mnist",  # beside the config
        tmp_path / "data/mnist",  # the working directory
    ]
    # none exists: the first candidate (where a download goes)
    assert resolve_data_dir(rel, [config_dir]) == shelf / "mnist"
    (tmp_path / "data/mnist").mkdir(parents=True)
    assert resolve_data_dir(rel, [config_dir]) == tmp_path / "data/mnist"
    (tmp_path / "repo/data/mnist").mkdir(parents=True)
    assert resolve_data_dir(rel, [config_dir]) == tmp_path / "repo/data/mnist"
    (shelf / "mnist").mkdir()
    assert resolve_data_dir(rel, [config_dir]) == shelf / "mnist"
    # an absolute path is used as it is
    assert resolve_data_dir(tmp_path / "elsewhere", [config_dir]) == tmp_path / "elsewhere"
    monkeypatch.delenv("SEQNORM_DATA")
    assert data_dir_candidates("mnist") == [cwd / "mnist"]


def test_mnist_datamodule_finds_data_in_seqnorm_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shelf/mnist").mkdir(parents=True)
    write_tiny_mnist(tmp_path / "shelf/mnist")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQNORM_DATA", str(tmp_path / "shelf"))
    dm = SequentialMNISTDataModule(data_dir="data/mnist", val_size=5, download=False)
    dm.setup("fit")
    assert dm.data_dir == str(tmp_path / "shelf/mnist") and len(dm.val_dataset) == 5


def test_copy_seq_len_says_one_thing() -> None:
    """seq_len is the constructor's T on the DataModule and the dataset alike; every module
    has input_len, the full input length (T + 20 for copy memory)."""
    dm = CopyMemoryDataModule(seq_len=5)
    ds = CopyMemoryDataset(seq_len=5, size=2)
    assert (ds.seq_len, ds.input_len) == (5, 25)
    assert (dm.seq_len, dm.delay, dm.input_len) == (5, 5, 25)
    assert AddingDataModule(seq_len=12).input_len == 12


def test_load_mnist_and_the_one_data_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seqnorm.data import default_mnist_dir, load_mnist

    (tmp_path / "shelf" / "mnist").mkdir(parents=True)
    write_tiny_mnist(tmp_path / "shelf" / "mnist")
    images, labels = load_mnist(tmp_path / "shelf" / "mnist", "test")
    assert images.shape == (8, 28, 28) and labels.tolist() == [i % 10 for i in range(8)]
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        load_mnist(tmp_path / "shelf" / "mnist", "val")
    monkeypatch.setenv("SEQNORM_DATA", str(tmp_path / "shelf"))
    assert default_mnist_dir() == tmp_path / "shelf" / "mnist"
    assert load_mnist("data/mnist", "train")[0].shape == (20, 28, 28)  # $SEQNORM_DATA/mnist
    monkeypatch.delenv("SEQNORM_DATA")
    monkeypatch.setenv("SEQNORM_MNIST_DIR", str(tmp_path / "elsewhere"))  # no longer read
    monkeypatch.chdir(tmp_path)
    assert default_mnist_dir() == tmp_path / "data" / "mnist"  # the working directory's
