"""The enrollment database (source of truth): SQLAlchemy models, repository, migrations. No torch here."""

from facerec.store.repository import NewTemplate, PersonSummary, Store, TemplateRows

__all__ = ["NewTemplate", "PersonSummary", "Store", "TemplateRows"]
