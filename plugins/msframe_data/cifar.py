"""``cifar10``: the CIFAR-10 images (python version), 32x32 px."""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from msframe.errors import UserError
from msframe_data.base import ArrayDataset, OfficialParams, shown

FOLDER = "cifar-10-batches-py"
TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST = ("test_batch",)

_ARRAY = np.zeros(1)
# The only callables a CIFAR batch needs to be rebuilt: numpy's array reconstructors (protocol 2
# and protocol 5 forms), ndarray, dtype, and the codec Python 3 uses for bytes in protocol 2.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY.__reduce__()[0],
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY.__reduce__()[0],
    ("numpy.core.numeric", "_frombuffer"): _ARRAY.__reduce_ex__(5)[0],
    ("numpy._core.numeric", "_frombuffer"): _ARRAY.__reduce_ex__(5)[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and refuses anything else, so a doctored data
    file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never does")
        return _ALLOWED[module, name]


def read_batch(path: Path) -> np.ndarray:
    """One CIFAR-10 python batch as uint8 ``[N, 3, 32, 32]``; UserError (key data.root) if malformed."""
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
        data = np.asarray(batch.get(b"data", batch.get("data")), dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"its data has shape {data.shape}, not [N, 3072]")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, OSError) as exc:
        raise UserError(f"{path} is not a CIFAR-10 python batch ({exc})", key="data.root") from None
    return data.reshape(-1, 3, 32, 32)  # each row: the red plane, then green, then blue, row-major


class Cifar10(ArrayDataset):
    """CIFAR-10, python version: 50,000 train and 10,000 test images of 32x32 px.

    Expects ``root/cifar-10-batches-py/`` with ``data_batch_1`` … ``data_batch_5`` and
    ``test_batch``, as unpacked from cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html).
    Nothing is downloaded: fetch and unpack the archive yourself. val is a seeded hold-out of the
    train batches, test is ``test_batch``. The batches are pickles, read by an unpickler that only
    rebuilds numpy arrays. The paper's 32 -> 128 px set-up is ``resize = 128``; its finest mesh then
    carries no information beyond 32 px, and report() says so.
    """

    NAME = "cifar10"
    NATIVE = 32

    class Params(OfficialParams):
        """The parameters shared by the official-format datasets (root, channels, resize, hold-out)."""

    def read(self, part: str) -> tuple[np.ndarray, list[str]]:
        root = Path(self.params.root).expanduser()
        folder = root / FOLDER
        missing = [f for f in TRAIN + TEST if not (folder / f).is_file()]
        if missing:
            hint = ""
            if (root / "data_batch_1").is_file():
                hint = f"; root should be the folder that contains {FOLDER}/, not that folder itself"
            raise UserError(
                f"expected the CIFAR-10 python batches in {shown(folder)}: {', '.join(TRAIN + TEST)} "
                f"(cifar-10-python.tar.gz unpacked in root; nothing is downloaded); missing: {', '.join(missing)}{hint}",
                key="data.root",
            )
        files = TRAIN if part == "train" else TEST
        batches = [read_batch(folder / f) for f in files]
        names = [f"{f}/{i}" for f, b in zip(files, batches) for i in range(len(b))]
        return np.concatenate(batches), names
