-- The global audit log: append-only, hash-chained (core/audit.py). Every commit that writes
-- journal entries appends one anchor here in the same transaction, under a transaction-scoped
-- advisory lock (the log's one serialisation point); operator acts and signed checkpoints are
-- records too. pos 0 is the genesis record every log starts from.
CREATE TABLE audit_log (
    pos BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    run_id TEXT,
    body TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
INSERT INTO audit_log (pos, kind, run_id, body, hash, created_at)
    VALUES (0, 'genesis', NULL, '{}', '0000000000000000000000000000000000000000000000000000000000000000',
            extract(epoch FROM now()));
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION autonomic_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION autonomic_refuse_change();
-- The log's head, one row: every writer updates it first (a row lock held to the end of its
-- transaction), so appends are serialised and each chains to the one before. A cache for the
-- writers only: verify reads audit_log itself.
CREATE TABLE audit_head (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    pos BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (pos, hash)
    VALUES (0, '0000000000000000000000000000000000000000000000000000000000000000');
