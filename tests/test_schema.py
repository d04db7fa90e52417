"""The result schema round-trips; readers refuse unknown versions and skip damaged lines loudly."""

import json

import pytest

from bench.errors import BenchError
from bench.results.files import append_row, read_rows
from bench.results.schema import RESULT_SCHEMA_VERSION, CellConfig, ProfileInfo, Row
from bench.results.sections import Environment, ModelInfo, Summary

pytestmark = pytest.mark.fast


def _row(status="ok") -> Row:
    cfg = CellConfig(model_id="m", variant_id="v", backend="llama.cpp", profile_id="auto", device="cpu",
                     threads=2, prompt_tokens=8, gen_tokens=4, repetitions=3, warmup=1, n_ctx=12,
                     n_gpu_layers=0, seed=0, stop_at_eos=False, timeout_s=60)
    return Row(run_id="r", created_at="2026-01-01T00:00:00+00:00", status=status, reason=None, config=cfg,
               model=ModelInfo.from_dict({"model_id": "m"}), profile=ProfileInfo.from_dict({"id": "auto"}),
               environment=Environment.from_dict({"python": "3.11"}), samples=[{"token_times": [0.1, 0.2]}],
               summary=Summary.from_dict({"decode_tps": {"mean": 10.0}}))


def test_row_round_trips_through_json():
    row = _row()
    again = Row.from_dict(json.loads(row.to_json()))
    assert again == row
    assert json.loads(row.to_json())["schema_version"] == RESULT_SCHEMA_VERSION
    assert json.loads(row.to_json())["cell_key"] == row.config.key()


def test_cell_key_ignores_timeout_but_not_settings():
    a = _row().config
    b = CellConfig(**{**a.__dict__, "timeout_s": 999})
    c = CellConfig(**{**a.__dict__, "threads": 1})
    assert a.key() == b.key() and a.key() != c.key()


def test_unknown_schema_version_is_refused():
    d = json.loads(_row().to_json())
    d["schema_version"] = 99
    with pytest.raises(BenchError, match="schema version 99"):
        Row.from_dict(d)


def test_damaged_line_is_skipped_with_its_line_number(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, _row())
    with path.open("a") as fh:
        fh.write('{"truncated": ')  # a crash mid-write
    append_row(path, _row("failed"))  # starts on a fresh line
    rows, warnings = read_rows(path)
    assert [r.status for r in rows] == ["ok", "failed"]
    assert len(warnings) == 1 and ":2:" in warnings[0]


def test_depth_zero_keeps_the_cell_key_rows_had_before_depth_existed():
    import hashlib
    from dataclasses import asdict

    a = _row().config
    before = asdict(a)
    before.pop("timeout_s")
    before.pop("depth")  # a row written before depth existed had no such field
    assert a.key() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    deep = CellConfig(**{**a.__dict__, "depth": 2048})
    assert deep.key() != a.key() and deep.identity() != a.identity() and "d=2048" in deep.label()
    old = json.loads(_row().to_json())
    del old["config"]["depth"]
    assert Row.from_dict(old).config.depth == 0


def test_a_version_1_row_is_read_by_its_reader_into_the_current_form():
    from bench.analysis.flat import basis, projected

    v1 = json.loads(_row().to_json())
    v1["schema_version"] = 1
    v1["config"]["profile_id"] = "rpi5-8g"
    v1["environment"]["host"] = {"hostname": "box"}
    v1.pop("tier", None)  # written before tier.basis existed
    v1["efficiency"] = {"projection": {"decode_tps": 12.5}}  # the withdrawn bandwidth-ratio projection
    row = Row.from_dict(v1)
    assert row.schema_version == RESULT_SCHEMA_VERSION == 2
    assert row.tier.basis == "emulated on box" and basis(row) == "emulated on box"
    assert row.efficiency.projection is None and projected(row, "decode_tps") is None
    v1["config"]["profile_id"], v1["tier"] = "auto", {"basis": "not measured on fleet node n"}
    assert Row.from_dict(v1).tier.basis == "not measured on fleet node n"  # a recorded basis is kept
    v1["tier"] = {}
    assert Row.from_dict(v1).tier.basis == "measured"


@pytest.mark.fast
def test_status_basis_and_machine_state_are_types_read_once_from_the_stored_text():
    """The stored strings stay as they were; a reader gets enums and a verdict, never a prefix to match."""
    from dataclasses import replace

    from bench.results.kinds import Basis, MachineVerdict, RowStatus, SpeedBasis, parse_basis
    from bench.results.sections import Tier

    d = json.loads(_row().to_json())
    row = Row.from_dict(d)
    assert row.status is RowStatus.OK and json.loads(row.to_json())["status"] == "ok"
    assert row.to_json() == _row().to_json()  # the enum writes the same JSON as the string did
    assert row.basis is Basis.MEASURED and row.speed_kind is SpeedBasis.MEASURED  # `auto`, before the fields
    emulated = Row.from_dict({**d, "config": {**d["config"], "profile_id": "rpi5-8g"}})
    assert emulated.basis is Basis.EMULATED and emulated.speed_kind is SpeedBasis.CAPS_ONLY
    assert emulated.basis_text == f"emulated on {emulated.host}"
    for stored, kind in (("measured", Basis.MEASURED), ("emulated on vm (a fleet node offering x)", Basis.EMULATED),
                         ("not measured on fleet node n1", Basis.NOT_MEASURED)):
        assert replace(row, tier=Tier(basis=stored)).basis is kind, stored
    assert parse_basis("emulated on vm (a fleet node offering x)") == (Basis.EMULATED, "vm")
    for stored, kind in (("measured", SpeedBasis.MEASURED), ("caps only", SpeedBasis.CAPS_ONLY),
                         ("projected from the tier's measured bandwidth", SpeedBasis.PROJECTED)):
        assert replace(row, tier=Tier(basis="emulated on h", speed_basis=stored)).speed_kind is kind, stored
    state = {"disturbed": True, "flags": ["other processes used 9% of the pinned cores", "steal 3%"]}
    verdict = MachineVerdict.of(state)
    assert verdict.disturbed and verdict.label == "DISTURBED: other processes used 9% of the pinned cores; steal 3%"
    assert verdict.flag_reason("short") == f"{verdict.label}; short" and verdict.flag_reason(None) == verdict.label
    assert MachineVerdict.of({"disturbed": False, "flags": []}).flag_reason("short") == "short"
    old = replace(row, reason="DISTURBED: a watched core's clock fell by 20% during the cell; 1 of 3 stopped early")
    # a row from before the report was stored: read from its reason, once
    assert old.machine.label == "DISTURBED: a watched core's clock fell by 20% during the cell"
    assert not row.machine.disturbed and row.machine.label is None


def test_one_file_holds_both_kinds_told_apart_by_kind(tmp_path):
    """A run row says kind "run" (an older one says nothing and is read as one), a serving row
    "serving"; a kind this version does not read is a warning with its line, never a run row."""
    from bench.results.files import read_results
    from bench.results.serving import LoadSpec, ServingRow

    path = tmp_path / "both.jsonl"
    append_row(path, _row())
    older = {k: v for k, v in json.loads(_row().to_json()).items() if k != "kind"}
    serving = ServingRow(run_id="s", record="point", status="ok", reason=None,
                         load=LoadSpec(mode="concurrency", value=2))
    path.write_text(path.read_text() + json.dumps(older) + "\n" + serving.to_json() + "\n"
                    + json.dumps({**older, "kind": "fleet"}) + "\n")
    assert json.loads(path.read_text().splitlines()[0])["kind"] == "run"
    rows, served, warnings = read_results(path)
    assert [r.kind for r in rows] == ["run", "run"] and rows[0] == rows[1]
    assert [(s.record, s.load_label, s.source) for s in served] == [("point", "c=2", f"{path}:3")]
    assert len(warnings) == 1 and f"{path}:4" in warnings[0] and "kind 'fleet'" in warnings[0]
