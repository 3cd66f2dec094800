-- Which worker has which agent versions (docs/release-safety.md): every worker writes the
-- (agent, version) pairs it registered, with the time it last said so. A run pinned to a version
-- no worker has announced for longer than the grace period is suspended with the fix.
CREATE TABLE worker_agents (
    owner TEXT NOT NULL,
    agent TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    seen_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (agent, agent_version, owner)
);
