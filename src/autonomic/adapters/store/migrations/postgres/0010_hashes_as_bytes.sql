-- Chain hashes as their 32 bytes, not 64 hex digits (issue 17: fewer bytes per step): each
-- journal entry's and each audit record's own hash, 32 bytes a row (about 180 bytes a default
-- step). Every reader still gets hex (the store converts; core/audit.py and core/journal.py
-- compute the chains over hex as before, so no hash changes). The log's head in audit_head stays
-- hex text: the commit statement chains the next record over it in SQL.
-- ALTER ... TYPE rewrites both tables once (no row trigger fires: the append-only ones stay).
ALTER TABLE journal ALTER COLUMN hash TYPE BYTEA USING decode(hash, 'hex');
ALTER TABLE audit_log ALTER COLUMN hash TYPE BYTEA USING decode(hash, 'hex');
