-- Delegation (docs/multi-agent.md): a child run names the capability it was delegated for, and a
-- child over its capability's fleet-wide concurrency limit waits queued (no worker claims it)
-- until a slot frees. The parent finds its children by parent_run_id (the run tree, cascading
-- cancels); admission counts a capability's children in flight.
ALTER TABLE runs ADD COLUMN capability TEXT;
ALTER TABLE runs ADD COLUMN queued INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_parent ON runs (parent_run_id);
CREATE INDEX runs_capability ON runs (capability, queued, status);
