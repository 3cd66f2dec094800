-- The embedded event bus, the transactional outbox and the consumers' inbox (docs/events.md).
-- bus_events: every published event once per topic (dedupe: the topic and event id, or
-- 'retry:<letter>' for a dead letter sent back to its one group, only_group).
CREATE TABLE bus_events (
    seq BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    tenant TEXT NOT NULL,
    only_group TEXT NOT NULL DEFAULT '',
    dedupe TEXT NOT NULL UNIQUE,
    envelope TEXT NOT NULL,
    published_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX bus_events_key ON bus_events (topic, key, seq);
-- bus_cursors: per consumer group and key, the last acknowledged seq, and the lease on the next.
CREATE TABLE bus_cursors (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    acked_seq BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    visible_at DOUBLE PRECISION NOT NULL,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION NOT NULL,
    first_failure DOUBLE PRECISION,
    last_failure DOUBLE PRECISION,
    last_error TEXT,
    PRIMARY KEY (grp, topic, key)
);
CREATE INDEX bus_cursors_owner ON bus_cursors (grp, lease_owner);
CREATE TABLE bus_dead_letters (
    id TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    seq BIGINT NOT NULL,
    envelope TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_failure DOUBLE PRECISION NOT NULL,
    last_failure DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    resolved_at DOUBLE PRECISION
);
CREATE INDEX bus_dead_letters_state ON bus_dead_letters (state, last_failure);
-- outbox: events written in the same transaction as the journal entries that cause them.
CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    run_id TEXT,
    envelope TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION
);
CREATE INDEX outbox_unsent ON outbox (sent_at, seq);
-- inbox: the events a consumer group has processed, written with the effect they caused.
CREATE TABLE inbox (
    grp TEXT NOT NULL,
    event_id TEXT NOT NULL,
    run_id TEXT,
    processed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (grp, event_id)
);
