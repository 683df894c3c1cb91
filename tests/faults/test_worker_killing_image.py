"""An image whose labelling kills its worker every time (killed for memory, a crash in native code): Ray replaces
the actor and retries, a bounded number of times, then the image is recorded as failed and the job finishes."""

from __future__ import annotations

import os

from autolabel.store import LabelStore, Status
from pipelines.label import MAX_LABEL_ATTEMPTS, Labeler, label
from tests.conftest import EXTRA_STEMS
from tests.runs import label_config

POISON = EXTRA_STEMS[1]


def test_an_image_that_kills_its_worker_every_time_is_recorded_as_failed(
    ray_address, dataset_root, teacher_checkpoint, tmp_path
):
    deaths = tmp_path / "deaths"
    deaths.mkdir()

    class KilledOnPoison(Labeler):
        def infer(self, images):
            if any(image_id == POISON for image_id in self.labelling):
                (deaths / str(os.getpid())).touch()
                os._exit(1)
            return super().infer(images)

        def label_claimed(self, batch, attempts):
            self.labelling = [batch["image_id"][i] for i in attempts]
            return super().label_claimed(batch, attempts)

    out = str(tmp_path / "labels.zarr")
    summary = label(label_config(dataset_root, teacher_checkpoint, out, threshold=0.0), labeler=KilledOnPoison)
    assert set(summary.failed) == {POISON} and "died 3 times" in summary.failed[POISON]
    assert len(list(deaths.iterdir())) == MAX_LABEL_ATTEMPTS
    store = LabelStore.open(out)
    assert store.completed_ids() == set(EXTRA_STEMS) - {POISON}
    assert {r.image_id: r.status for r in store.records()}[POISON] == Status.FAILED
