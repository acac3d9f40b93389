"""`facerec verify --liveness` refuses a printed-photo attack with its own reason; `liveness evaluate` reports
ISO/IEC 30107-3 metrics. Real NUAA frames (640×480 webcam)."""

from __future__ import annotations

import json
import shutil

from conftest import need, run_cli

SUBJECT = "0003"
ENROLL = "ClientRaw/0003/0003_01_00_01_0.jpg"
LIVE = "ClientRaw/0003/0003_01_00_01_468.jpg"
ATTACK = "ImposterRaw/0003/0003_01_08_03_81.jpg"  # session 03: never seen in training


def test_verify_with_liveness_refuses_a_printed_photo(data_dir, tmp_path):
    nuaa = data_dir / "liveness" / "nuaa"
    need((nuaa / ATTACK).is_file(), f"NUAA frames not found under {nuaa}")
    db = str(tmp_path / "door.db")
    enrolled = run_cli("--db", db, "enroll", "Subject 3", str(nuaa / ENROLL), "--largest", "--json")
    assert enrolled.returncode == 0, enrolled.stderr

    live = run_cli("--db", db, "verify", "Subject 3", str(nuaa / LIVE), "--liveness", "--largest", "--json")
    assert live.returncode == 0, live.stdout + live.stderr
    assert json.loads(live.stdout)["liveness"]["is_live"] is True

    attack = run_cli("--db", db, "verify", "Subject 3", str(nuaa / ATTACK), "--liveness", "--largest", "--json")
    result = json.loads(attack.stdout)
    assert attack.returncode == 1 and result["reason"] == "spoof" and result["match"] is False
    assert result["liveness"]["reason"] == "spoof"
    # the same photo without --liveness is judged on the face alone
    plain = json.loads(run_cli("--db", db, "verify", "Subject 3", str(nuaa / ATTACK), "--largest", "--json").stdout)
    assert plain["reason"] != "spoof" and plain["liveness"] is None
    audit = json.loads(run_cli("--db", db, "audit", "--json").stdout)
    assert any(e["action"] == "verify" and e["outcome"] == "spoof" for e in audit)


def test_liveness_evaluate_folders(data_dir, tmp_path):
    nuaa = data_dir / "liveness" / "nuaa"
    need((nuaa / ATTACK).is_file(), f"NUAA frames not found under {nuaa}")
    live, spoof = tmp_path / "live", tmp_path / "spoof"
    live.mkdir()
    spoof.mkdir()
    for p in sorted((nuaa / "ClientRaw" / SUBJECT).glob("*.jpg"))[:6]:
        shutil.copy(p, live)
    for p in sorted((nuaa / "ImposterRaw" / SUBJECT).glob("*.jpg"))[:6]:
        shutil.copy(p, spoof)
    plot = tmp_path / "roc.png"
    result = run_cli("liveness", "evaluate", "--live", str(live), "--spoof", str(spoof), "--plot", str(plot),
                     "--model", "texture-v2", "--model", "minifasnet-v2", "--subset", "pic 1xx=*_1??.jpg",
                     "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["models"] == ["texture-v2", "minifasnet-v2"]
    rows = {(r["model"], r["subset"]): r for r in out["rows"]}
    assert set(rows) == {(m, s) for m in out["models"] for s in ("all", "pic 1xx")}
    for r in rows.values():
        for key in ("apcer", "bpcer", "acer", "auc", "bpcer_at_apcer_1pct"):
            assert 0.0 <= r[key] <= 1.0
        assert abs(r["acer"] - (r["apcer"] + r["bpcer"]) / 2) < 1e-4
        assert r["ms_per_face"] > 0
    assert rows[("minifasnet-v2", "all")]["n_bona_fide"] == 6 and rows[("minifasnet-v2", "all")]["n_attack"] == 6
    assert rows[("minifasnet-v2", "pic 1xx")]["n_bona_fide"] == 3
    assert out["report"] == {k: v for k, v in rows[("texture-v2", "all")].items()
                             if k not in ("model", "subset", "ms_per_face")}
    assert plot.stat().st_size > 1000
    table = run_cli("liveness", "evaluate", "--live", str(live), "--spoof", str(spoof))
    assert table.returncode == 0 and "minifasnet-v2" in table.stdout and "ACER" in table.stdout
    missing = run_cli("liveness", "evaluate", "--live", str(tmp_path / "nope"), "--spoof", str(spoof))
    assert missing.returncode == 2 and "not a directory" in missing.stderr
