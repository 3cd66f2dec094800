-- Runs, their append-only journal, and content-addressed blobs.
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    agent TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    version BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    fence BIGINT NOT NULL DEFAULT 0,
    input TEXT NOT NULL,
    output TEXT,
    max_turns INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    parent_run_id TEXT,
    correlation_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX runs_runnable ON runs (status, lease_expires_at, created_at);
CREATE INDEX runs_created ON runs (created_at);

CREATE TABLE journal (
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE blobs (
    address TEXT PRIMARY KEY,
    data BYTEA NOT NULL,
    size BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE FUNCTION autonomic_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END;
$$;
CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION autonomic_refuse_change();
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION autonomic_refuse_change();
CREATE TRIGGER blobs_immutable BEFORE UPDATE ON blobs
    FOR EACH ROW EXECUTE FUNCTION autonomic_refuse_change();
