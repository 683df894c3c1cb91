"""Configs of labelling and evaluation runs as the tests use them: scale 1.0 unless a test asks otherwise."""

from models.predict import PredictOptions
from pipelines.evaluate import EvaluateConfig
from pipelines.label import LabelConfig


def _predict(scales=(1.0,), pointrend=True, batch_size=1, flip=False, max_pixels=None) -> PredictOptions:
    extra = {} if max_pixels is None else {"max_pixels": max_pixels}
    return PredictOptions(scales=scales, pointrend=pointrend, batch_size=batch_size, flip=flip, **extra)


def label_config(root, checkpoint, out, *, scales=(1.0,), pointrend=True, batch_size=1, flip=False,
                 **settings) -> LabelConfig:
    return LabelConfig(root=root, checkpoint=checkpoint, out=str(out),
                       predict=_predict(scales, pointrend, batch_size, flip), **settings)


def evaluate_config(root, checkpoint, split="val", *, scales=(1.0,), pointrend=True, flip=False, max_pixels=None,
                    **settings) -> EvaluateConfig:
    return EvaluateConfig(root=root, checkpoint=checkpoint, split=split,
                          predict=_predict(scales, pointrend, flip=flip, max_pixels=max_pixels), **settings)
