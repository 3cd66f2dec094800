-- The global audit log: append-only, hash-chained (core/audit.py). Every commit that writes
-- journal entries appends one anchor here in the same transaction; operator acts and signed
-- checkpoints are records too. pos 0 is the genesis record every log starts from.
CREATE TABLE audit_log (
    pos INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    run_id TEXT,
    body TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
INSERT INTO audit_log (pos, kind, run_id, body, hash, created_at)
    VALUES (0, 'genesis', NULL, '{}', '0000000000000000000000000000000000000000000000000000000000000000',
            CAST(strftime('%s', 'now') AS REAL));
CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END;
