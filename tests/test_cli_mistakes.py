"""User mistakes at the command line: the right exit code and a message naming the mistake, never a traceback.

Exit 2: the command line itself is wrong; typer refuses the option before anything runs, with its usage box.
Exit 1: the command ran and found something the user can fix (a missing file, settings that contradict); the
message is one line.
"""

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def paths(dataset_root, teacher_checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mistakes")
    (tmp / "garbage.pt").write_bytes(b"not a checkpoint")
    (tmp / "plain.txt").write_text("not a store")
    return {"ROOT": str(dataset_root), "CKPT": str(teacher_checkpoint), "TMP": str(tmp)}


MISTAKES = [
    # (arguments, exit code, words the one-line message must hold)
    ("label ROOT --checkpoint CKPT --out TMP/s.zarr --threshold 1.5", 2, "[0, 1)"),
    ("label ROOT --checkpoint CKPT --out TMP/s.zarr --threshold nan", 2, "[0, 1)"),
    ("label ROOT --checkpoint CKPT --out TMP/s.zarr --scales nan", 2, "positive numbers"),
    ("label ROOT --checkpoint CKPT --out TMP/s.zarr --scales 1.0,abc", 2, "comma-separated"),
    ("label ROOT --checkpoint CKPT --out TMP/s.zarr --max-pixels 10", 2, "at least"),
    ("label ROOT --checkpoint CKPT --out TMP/s.zarr --codec png", 2, "png"),
    ("label ROOT --checkpoint CKPT --out TMP/s.zarr --workers 0", 2, "--workers"),
    ("label ROOT --checkpoint TMP/absent.pt --out TMP/s.zarr", 1, "absent.pt: checkpoint does not exist"),
    ("label ROOT --checkpoint TMP/garbage.pt --out TMP/s.zarr", 1, "garbage.pt: not a readable autolabel checkpoint"),
    ("label TMP/nowhere --checkpoint CKPT --out TMP/s.zarr", 1, "nowhere"),
    ("train ROOT --out TMP/run --preset w32", 2, "w32"),
    ("train ROOT --out TMP/run --device tpu", 2, "tpu"),
    ("train ROOT --out TMP/run --optimizer adam", 2, "adam"),
    ("train ROOT --out TMP/run --crop 64by128", 2, "HxW"),
    ("train ROOT --out TMP/run --lr nan", 1, "lr must be a positive number"),
    ("train ROOT --out TMP/run --batch-size 3 --workers 2", 1, "divisible"),
    ("train ROOT --out TMP/run --train-only point_head", 1, "--init"),
    ("evaluate ROOT --checkpoint CKPT --scales 0", 2, "positive numbers"),
    ("evaluate ROOT --checkpoint TMP/absent.pt", 1, "absent.pt"),
    ("evaluate ROOT --checkpoint CKPT --split nosuchsplit", 1, "nosuchsplit"),
    ("calibrate ROOT --checkpoint CKPT --target-accuracy 1.5", 2, "(0, 1]"),
    ("import ROOT --out TMP/i.zarr --source gtMedium", 2, "gtMedium"),
    ("inspect TMP/plain.txt", 1, "plain.txt"),
    ("verify TMP/absent.zarr --repair", 1, "absent.zarr: no label store here"),
    ("inspect TMP/absent.zarr --overlay x", 2, "--overlay and --png go together"),
    ("inspect TMP/absent.zarr --storage-options endpoint=x", 2, "expected a JSON object"),
    ("export TMP/absent.zarr --out TMP/png --format rgb", 2, "rgb"),
    ("rethreshold TMP/absent.zarr --threshold 2 --out TMP/r.zarr", 2, "[0, 1)"),
    ("fuse ROOT --out TMP/f.parquet", 1, "nothing to fuse"),
    ("synth ROOT", 1, "ROOT"),
]


@pytest.mark.parametrize("line, code, words", MISTAKES, ids=[m[0].split(" --")[0] + " " + m[2] for m in MISTAKES])
def test_a_user_mistake_names_itself_with_its_exit_code_and_no_traceback(paths, line, code, words):
    result = runner.invoke(app, [_fill(word, paths) for word in line.split()])
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert _fill(words, paths) in _unwrapped(result.output)
    if code == 1:
        assert len(result.output.strip().splitlines()) == 1, result.output


def _fill(text: str, paths: dict[str, str]) -> str:
    for name, value in paths.items():
        text = text.replace(name, value)
    return text


def _unwrapped(output: str) -> str:
    """typer boxes usage errors and may wrap them: the text without box characters and line breaks."""
    return " ".join(output.replace("│", " ").replace("╭", " ").replace("╰", " ").replace("─", " ").split())
