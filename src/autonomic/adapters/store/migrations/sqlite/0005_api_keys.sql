-- API keys for the service: only the hash of each secret, bound to a tenant, a role and an expiry,
-- with who created, rotated and revoked it (a key has no journal of its own).
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    created_by TEXT NOT NULL,
    rotated_at REAL,
    rotated_by TEXT,
    revoked_at REAL,
    revoked_by TEXT
) WITHOUT ROWID;
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);
-- The service lists a tenant's runs newest first and its approvals in queue order.
CREATE INDEX runs_tenant_created ON runs (tenant, created_at);
CREATE INDEX approvals_tenant_status ON approvals (tenant, status, created_at);
