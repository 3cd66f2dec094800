-- Runs, their append-only journal, and content-addressed blobs.
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    agent TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    version INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at REAL NOT NULL DEFAULT 0,
    fence INTEGER NOT NULL DEFAULT 0,
    input TEXT NOT NULL,
    output TEXT,
    max_turns INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    parent_run_id TEXT,
    correlation_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX runs_runnable ON runs (status, lease_expires_at, created_at);
CREATE INDEX runs_created ON runs (created_at);

CREATE TABLE journal (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE blobs (
    address TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER journal_append_only_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'journal is append-only: UPDATE refused'); END;
CREATE TRIGGER journal_append_only_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'journal is append-only: DELETE refused'); END;
CREATE TRIGGER blobs_immutable_update BEFORE UPDATE ON blobs
BEGIN SELECT RAISE(ABORT, 'blobs are immutable: UPDATE refused'); END;
