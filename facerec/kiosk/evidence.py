"""Kiosk evidence frames (`facerec kiosk --save-evidence DIR`) show a person's face, so `facerec remove NAME
--erase` deletes them too. Each kiosk decision's audit event names the frame it saved, so the eraser finds a
person's frames through the audit trail (visits that named them, or had them as the best candidate) and needs
no knowledge of where a kiosk kept its folder."""

from __future__ import annotations

import re
from pathlib import Path

from facerec.api import FaceRec, register_eraser

KIOSK_ACTION = "kiosk"
# The file names the kiosk writes (loop.Kiosk._save_evidence): only these are ever deleted.
EVIDENCE_NAME = re.compile(r"^\d{8}T\d{12}_visit\d+_[a-z_]+\.jpg$")
PAGE = 1000


@register_eraser
def erase_kiosk_evidence(fr: FaceRec, name: str) -> list[str]:
    """Delete the saved deciding frames of every kiosk visit about `name`; the audit events stay."""
    deleted = 0
    before: int | None = None
    while events := fr.audit_query(limit=PAGE, action=KIOSK_ACTION, before_id=before):
        before = events[-1]["id"]
        for event in events:
            details = event["details"] or {}
            if name not in (details.get("name"), details.get("candidate")) or not details.get("evidence"):
                continue
            path = Path(details["evidence"])
            if EVIDENCE_NAME.match(path.name) and path.is_file() and not path.is_symlink():
                path.unlink()
                deleted += 1
    return [f"{deleted} kiosk evidence frame(s) deleted"] if deleted else []
