"""The enrollment database (source of truth): SQLAlchemy models, repository, migrations. No torch here."""

from facerec.store.repository import AuditEntry, ChangeSet, GalleryState, NewTemplate, PersonSummary, Store, TemplateRows

__all__ = ["AuditEntry", "ChangeSet", "GalleryState", "NewTemplate", "PersonSummary", "Store", "TemplateRows"]
