"""Migration revisions, applied in order by ``manyheads.storage.migrate``."""
