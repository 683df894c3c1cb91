"""Other zarr v3 readers open a store made with --codec zstd: it uses only codecs of the zarr v3 specification."""

from pathlib import Path

import numpy as np
import tensorstore as ts

from autolabel.labels import IGNORE
from autolabel.store import LabelStore, Provenance, array_path

PROVENANCE = Provenance(checkpoint_sha256="ab" * 32, scales=(1.0,), threshold=0.5, pointrend=False)


def test_tensorstore_reads_the_labels_of_a_zstd_store(tmp_path):
    store = LabelStore.create(tmp_path / "labels.zarr", PROVENANCE, codec="zstd")
    maps = {}
    for frame in (19, 20):
        labels = np.full((48, 96), IGNORE, np.uint8)
        labels[: frame, :40] = 7
        labels[30:, 50:] = 13
        maps[frame] = labels
        store.write(f"ulm_000003_{frame:06d}", labels, source=f"{frame}.png")
    store.write_manifest()
    path = Path(store.url) / array_path("labels", "ulm", 48, 96)
    array = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}, read=True).result()
    for frame, labels in maps.items():
        np.testing.assert_array_equal(array[3, frame].read().result(), labels)
    assert array[3, 21].read().result().max() == IGNORE  # an image never written reads as ignore
