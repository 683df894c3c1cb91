"""Label stores in object storage: label, import, rethreshold, inspect, export, fuse and train --samples against an S3-compatible server
(moto) on 127.0.0.1, with the endpoint and credentials given as --storage-options or as AWS environment variables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from autolabel.claims import claim_key
from autolabel.labels import IGNORE
from autolabel.store import METADATA_KEY, LabelStore, Provenance
from autolabel.synth import SynthConfig, generate
from cli import app
from models.checkpoint import load_checkpoint

moto_server = pytest.importorskip("moto.server", reason="the s3 tests need moto[server] (pip install -e '.[test]')")
pytest.importorskip("s3fs", reason="the s3 tests need s3fs (pip install -e '.[test]')")

BUCKET = "autolabel-tests"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
STORE = f"s3://{BUCKET}/labels.zarr"
IMAGES = 3

runner = CliRunner()


def invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def endpoint():
    """The URL of an S3 server on 127.0.0.1 holding an empty BUCKET; the credentials are in the environment."""
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():
            env.setenv(name, value)
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
        yield url
    server.stop()


@pytest.fixture(scope="module")
def options(endpoint) -> str:
    """--storage-options for the server: Ray's workers, started before the server, do not have its environment."""
    return json.dumps({"endpoint_url": endpoint, "key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                       "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]})


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("s3")
    generate(base / "root", base / "truth", SynthConfig(train=2, val=1, train_extra=IMAGES, height=64, width=128))
    return base / "root"


@pytest.fixture(scope="module")
def labelled(ray_address, root, teacher_checkpoint, options) -> dict:
    """The JSON summary of the first `label` run into the S3 store (threshold 0: every pixel labelled)."""
    result = invoke("label", root, "--checkpoint", teacher_checkpoint, "--out", STORE, "--scales", "1.0",
                    "--no-pointrend", "--threshold", "0", "--storage-options", options, "--json")
    return json.loads(result.stdout)


def test_the_first_label_run_into_s3_reports_and_indexes_every_image(labelled, options):
    assert (labelled["done"], labelled["labelled_fraction"]) == (IMAGES, 1.0)
    assert labelled["bytes_per_image"] > 0
    store = LabelStore.open(STORE, storage_options=json.loads(options))
    assert store.manifest().num_rows == IMAGES


def test_inspect_finds_the_s3_endpoint_in_the_environment(labelled, endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    report = json.loads(invoke("inspect", STORE, "--json").stdout)
    assert report["images"] == IMAGES


def test_export_writes_every_map_of_an_s3_store(labelled, options, tmp_path):
    invoke("export", STORE, "--out", tmp_path, "--storage-options", options)
    assert len(list(tmp_path.rglob("*_trainIds.png"))) == IMAGES


def test_a_student_trains_on_a_fused_table_of_an_s3_store(labelled, root, options, endpoint, tmp_path, monkeypatch):
    fused = tmp_path / "fused.parquet"
    invoke("fuse", root, "--labels", STORE, "--out", fused, "--storage-options", options)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # training opens the stores the table names
    invoke("train", root, "--out", tmp_path / "run", "--samples", fused, "--iters", 2, "--batch-size", 2,
           "--crop", "32x64")
    assert (tmp_path / "run" / "model.pt").is_file()


def test_training_takes_storage_options_and_keeps_them_out_of_its_checkpoint(labelled, root, options, tmp_path):
    fused = tmp_path / "fused.parquet"
    invoke("fuse", root, "--labels", STORE, "--out", fused, "--storage-options", options)
    invoke("train", root, "--out", tmp_path / "run", "--samples", fused, "--iters", 2, "--batch-size", 2,
           "--crop", "32x64", "--storage-options", options)
    saved = load_checkpoint(tmp_path / "run" / "model.pt").metadata["training"]
    assert "storage_options" not in saved and CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in json.dumps(saved)


def test_import_writes_label_files_into_s3_given_storage_options(root, options):
    url = f"s3://{BUCKET}/imported.zarr"
    invoke("import", root, "--out", url, "--split", "train", "--source", "gtFine", "--storage-options", options)
    assert LabelStore.open(url, storage_options=json.loads(options)).manifest().num_rows == 2


def test_rethreshold_writes_a_local_store_again_into_s3_given_storage_options(options, tmp_path):
    source = LabelStore.create(tmp_path / "kept.zarr", Provenance("0" * 64, (1.0,), 0.5, False, keep_confidence=True))
    labels, confidence = np.zeros((8, 16), np.uint8), np.full((8, 16), 9, np.uint8)  # steps: 9 is above 0.9
    confidence[:, :8] = 7  # the left half is 0.7-0.8 sure: ignored at 0.9
    source.write("city_000000_000001", labels, source="img.png", confidence=confidence)
    source.write_manifest()
    url = f"s3://{BUCKET}/rethresholded.zarr"
    invoke("rethreshold", tmp_path / "kept.zarr", "--threshold", "0.9", "--out", url, "--storage-options", options)
    stored = LabelStore.open(url, storage_options=json.loads(options)).read("city_000000_000001")
    assert (stored[:, :8] == IGNORE).all() and (stored[:, 8:] == 0).all()


def test_the_settings_document_of_an_s3_store_is_created_only_once(labelled, options):
    zstore = LabelStore.open(STORE, storage_options=json.loads(options))._zstore
    first = claim_key(zstore, METADATA_KEY, b"{}")
    assert first != b"{}" and LabelStore.open(STORE, storage_options=json.loads(options)).manifest().num_rows == IMAGES
