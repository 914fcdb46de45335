"""`framebus wal inspect` and `framebus wal replay` on a bus's WAL directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

import framebus as fb
from framebus.cli import main


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    with fb.FrameBus(preset="memory_optimized", wal_dir=str(tmp_path)) as bus:
        sub = bus.subscribe("a.>", group="g")
        bus.publish_batch([b"hello", b"\xff\x00"], topic="a.b")
        bus.publish(b"z", topic="c")
        sub.commit(sub.recv(timeout=5).seq)
    return tmp_path


def test_inspect_text(wal_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wal", "inspect", str(wal_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"WAL {wal_dir} (layout ")
    assert out[1:] == [
        "  frames    3 (0..2), next seq 3",
        out[2],  # bytes: the record sizes
        "  damaged   0",
        "  group     g: next seq 1",
    ]
    assert out[2].startswith("  bytes     ") and out[2].endswith("retained from seq 0")


def test_inspect_json(wal_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wal", "inspect", "--json", str(wal_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["first_seq"], info["last_seq"], info["frames"]) == (0, 2, 3)
    assert (info["groups"], info["corrupt"], info["verified"]) == ({"g": 1}, 0, True)


def test_replay_jsonl_and_selection(wal_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wal", "replay", str(wal_dir)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["seq"], x["topic"]) for x in lines] == [(0, "a.b"), (1, "a.b"), (2, "c")]
    assert lines[0]["payload"] == "hello"
    assert lines[1]["payload_b64"] == "/wA="
    assert all(x["ts_ns"] > 0 for x in lines)
    assert main(["wal", "replay", str(wal_dir), "--from", "1", "--to", "1"]) == 0
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [1]
    assert main(["wal", "replay", str(wal_dir), "--topic", "c"]) == 0
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [2]


def test_replay_raw(wal_dir: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["wal", "replay", str(wal_dir), "--format", "raw", "--topic", "a.>"]) == 0
    assert capfdbinary.readouterr().out == b"hello\xff\x00"


def test_damaged_record_is_reported(wal_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = Rdict(
        str(wal_dir),
        Options(raw_mode=True),
        column_families={"meta": Options(raw_mode=True), "groups": Options(raw_mode=True)},
    )
    key = (1).to_bytes(8, "big")
    value = bytearray(db[key])
    value[-6] ^= 0xFF  # a payload byte: the CRC no longer matches
    db[key] = bytes(value)
    db.close()
    assert main(["wal", "inspect", str(wal_dir)]) == 0
    assert "  damaged   1 (seq 1)" in capsys.readouterr().out
    assert main(["wal", "replay", str(wal_dir)]) == 0
    captured = capsys.readouterr()
    assert [json.loads(x)["seq"] for x in captured.out.splitlines()] == [0, 2]
    assert "skipped 1 damaged records (seq 1)" in captured.err


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wal"]) == 2
    assert "say 'inspect' or 'replay'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no such directory"):
        main(["wal", "inspect", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as info:
        main(["wal", "replay", str(tmp_path), "--from", "-3"])
    assert info.value.code == 2
    assert "expected a sequence number >= 0, got -3" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["wal", "inspect", str(tmp_path / "empty")]) == 1
    assert "wal inspect: " in capsys.readouterr().err
