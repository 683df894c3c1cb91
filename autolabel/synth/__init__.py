"""Synthetic street scenes written in the Cityscapes layout, so every stage runs without the real dataset.

Each image is a perspective street drawn by a generator seeded from (seed, split, index), so any
image can be reproduced on its own. A scene is a list of labelled polygons in painter's order:
the fine labels are those polygons rasterised by cityscapesscripts, the image is painted from the
same rasterisation, and the coarse labels are inset outlines of the fine regions of the same scene.

Road and sidewalk share one material (same colour, same noise) and differ only by position and a
kerb line; terrain and vegetation share one colour and differ by height. Poles are 1-3 px wide at
any resolution, so they fade when the image is halved. Colours and light change per image.

    config.py    SynthConfig, its presets, splits, cities, frame
    geometry.py  the camera over flat ground, world-to-pixel quads, polygon clipping
    scene.py     what a scene is made of: parts, paint, details, shadows, lighting, palette, sides
    street.py    the street (sky, backdrop, ground, facades, parks) and compose_scene
    objects.py   trees, poles, signs, lights, people, cycles, vehicles and their placement
    raster.py    polygon documents, their label-id maps, the coarse annotation
    paint.py     the image painted from a scene
    sample.py    one image with its labels, in memory (render_sample)
    writer.py    the files on disk (generate)
"""

from autolabel.synth.config import CITIES, FINE_SPLITS, FRAME, MIN_HEIGHT, MIN_WIDTH, SPLITS, SynthConfig
from autolabel.synth.sample import SynthSample, render_sample, sample_name, sample_rng
from autolabel.synth.writer import GENERATED_DIRS, LABEL_ID_PALETTE, PNG_LEVEL, SynthSummary, generate, write_sample

__all__ = [
    "CITIES", "FINE_SPLITS", "FRAME", "GENERATED_DIRS", "LABEL_ID_PALETTE", "MIN_HEIGHT", "MIN_WIDTH", "PNG_LEVEL",
    "SPLITS", "SynthConfig", "SynthSample", "SynthSummary", "generate", "render_sample",
    "sample_name", "sample_rng", "write_sample",
]
