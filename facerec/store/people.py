"""Gallery edits the HTTP service offers beyond enroll/remove: rename a person, delete one photo's template,
and a filtered audit query. Every template edit bumps the generation with its change-log rows, so other
processes' galleries catch up at their next search, as for enroll and remove.
"""

from __future__ import annotations

from sqlalchemy import delete, select

from facerec.errors import DuplicateIdentityError, UnknownPersonError
from facerec.store.repository import AuditEntry, Store
from facerec.store.schema import AuditEvent, Person, Template, TemplateChange


def rename_person(store: Store, old: str, new: str, audit: AuditEntry | None = None) -> int:
    """Rename a person (templates kept); returns how many templates now carry the new name.

    The change log records the templates as removed and then added again, so a process that catches up
    re-reads them with their new owner.
    """
    with store.session(write=True) as s:
        generation_row = store._lock_generation(s)
        person = s.scalar(select(Person).where(Person.name == old))
        if person is None:
            raise UnknownPersonError(f"unknown person {old!r}")
        if new != old and s.scalar(select(Person.id).where(Person.name == new)) is not None:
            raise DuplicateIdentityError(f"cannot rename {old!r} to {new!r}: {new!r} is already enrolled")
        person.name = new
        ids = list(s.scalars(select(Template.id).where(Template.person_id == person.id)))
        generation = store._bump_generation(s, generation_row, removed=ids)
        s.flush()  # the removals get lower change ids than the re-additions: net, the templates are re-read
        s.add_all([TemplateChange(generation=generation, template_id=i, added=True) for i in ids])
        if audit is not None:
            store._add_audit(s, audit, details={"from": old, "to": new, "templates": len(ids)})
        return len(ids)


def remove_template(store: Store, template_id: int, model_id: str, audit: AuditEntry | None = None) -> str:
    """Delete one enrolled photo's template; returns its owner. A person left with none is removed too."""
    with store.session(write=True) as s:
        generation_row = store._lock_generation(s)
        row = s.execute(select(Template.id, Person.id, Person.name).join(Person)
                        .where(Template.id == int(template_id), Template.model_id == model_id)).first()
        if row is None:
            raise UnknownPersonError(f"no enrolled face with id {template_id}")
        _, person_id, name = row
        s.execute(delete(Template).where(Template.id == int(template_id)))
        if s.scalar(select(Template.id).where(Template.person_id == person_id).limit(1)) is None:
            s.execute(delete(Person).where(Person.id == person_id))
        store._bump_generation(s, generation_row, removed=[int(template_id)])
        if audit is not None:
            store._add_audit(s, audit, details={"template_id": int(template_id)})
        return name


def audit_query(store: Store, limit: int = 100, action: str | None = None, person: str | None = None,
                before_id: int | None = None) -> list[dict]:
    """Newest audit events first, optionally of one action or person; `before_id` pages backwards."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEvent.action == action)
    if person:
        query = query.where(AuditEvent.person_name == person)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    with store.session() as s:
        return [{"id": e.id, "at": e.at.isoformat(timespec="seconds"), "action": e.action, "person": e.person_name,
                 "outcome": e.outcome, "score": e.score, "threshold": e.threshold, "model_id": e.model_id,
                 "details": e.details} for e in s.scalars(query)]


def template_ids_by_source(store: Store, name: str, model_id: str, digests: list[str]) -> dict[str, int]:
    """Template id of each of a person's photos, by the photo's SHA-256 (ids for what an upload enrolled)."""
    with store.session() as s:
        return dict(s.execute(select(Template.source_sha256, Template.id).join(Person).where(
            Person.name == name, Template.model_id == model_id, Template.source_sha256.in_(digests))).all())
