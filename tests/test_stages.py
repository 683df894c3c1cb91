"""The stage graph reuses a stage only while what it consumed is unchanged."""

import json

from pipelines.stages import StageGraph


def _graph(tmp_path, log):
    class Recorder:
        def stage(self, name, reused):
            log.append((name, reused))

        def progress(self, done, total):
            pass

    return StageGraph(tmp_path, Recorder())


def _run_chain(tmp_path, log, output, params=1):
    graph = _graph(tmp_path, log)
    graph.run("make", lambda: {"made": True}, outputs=[output], params=params)
    graph.run("use", lambda: {"used": True}, after=["make"])
    return graph


def _second_run(tmp_path, params=1, delete_output=False):
    """The stages run or reused when the chain runs again with `params` (first run: params 1)."""
    output = tmp_path / "out.txt"
    output.write_text("x")
    _run_chain(tmp_path, [], output)
    if delete_output:
        output.unlink()
    log = []
    _run_chain(tmp_path, log, output, params)
    return log


def test_a_rerun_reuses_every_finished_stage(tmp_path):
    assert _second_run(tmp_path) == [("make", True), ("use", True)]


def test_a_deleted_output_reruns_its_stage_and_every_stage_after_it(tmp_path):
    assert _second_run(tmp_path, delete_output=True) == [("make", False), ("use", False)]


def test_changed_parameters_rerun_the_stage_and_every_stage_after_it(tmp_path):
    assert _second_run(tmp_path, params=2) == [("make", False), ("use", False)]


def test_the_record_holds_the_result_and_its_reuse_key(tmp_path):
    graph = _graph(tmp_path, [])
    assert graph.run("make", lambda: {"value": 3}) == {"value": 3}
    record = json.loads((tmp_path / "stages" / "make.json").read_text())
    assert record["result"] == {"value": 3} and record["key"] and record["run"]


def test_a_failed_stage_records_nothing_and_runs_again(tmp_path):
    graph = _graph(tmp_path, [])

    def fail():
        raise RuntimeError("boom")

    try:
        graph.run("make", fail)
    except RuntimeError:
        pass
    assert not (tmp_path / "stages" / "make.json").exists()
