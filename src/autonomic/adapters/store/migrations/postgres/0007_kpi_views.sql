-- The operators' KPIs as views over runs and the journal (docs/observability.md).
-- run_kpi_facts: one row per run - its agent, task type (metadata "task_type"), status, when it
-- started and ended, its steps (model turns + tool results), its model cost, whether it met a
-- transient failure (a worker takeover, a retried tool or model call) and whether a human acted
-- (an approval, a settlement, an operator's transition). Payloads stored as blobs (over 2 KiB)
-- are not read here: `autonomic kpis` reads whole journals.
CREATE VIEW run_kpi_facts AS
SELECT
    r.id AS run_id,
    r.tenant AS tenant,
    r.agent AS agent,
    COALESCE((r.metadata::jsonb ->> 'task_type'), 'default') AS task_type,
    r.status AS status,
    r.created_at AS created_at,
    CASE WHEN r.status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN r.updated_at END AS ended_at,
    (SELECT COUNT(*) FROM journal j
        WHERE j.run_id = r.id AND j.kind IN ('model.response', 'tool.result')) AS steps,
    (SELECT COALESCE(SUM((j.payload::jsonb ->> 'cost_usd')::double precision), 0.0) FROM journal j
        WHERE j.run_id = r.id AND j.kind IN ('model.response', 'summary')) AS cost_usd,
    CASE WHEN EXISTS (SELECT 1 FROM journal j WHERE j.run_id = r.id AND (
        j.kind = 'recovery'
        OR (j.kind IN ('tool.result', 'model.response')
            AND COALESCE((j.payload::jsonb ->> 'attempts')::integer, 1) > 1)))
    THEN 1 ELSE 0 END AS transient,
    CASE WHEN EXISTS (SELECT 1 FROM journal j WHERE j.run_id = r.id AND (
        j.kind IN ('approval', 'settlement')
        OR (j.kind = 'transition' AND (j.payload::jsonb ->> 'by') = 'operator')))
    THEN 1 ELSE 0 END AS human,
    CASE WHEN EXISTS (SELECT 1 FROM journal j WHERE j.run_id = r.id AND (
        j.kind = 'settlement'
        OR (j.kind = 'transition' AND (j.payload::jsonb ->> 'by') = 'operator')))
    THEN 1 ELSE 0 END AS human_repair
FROM runs r;

-- kpis: per agent and task type. Rates are over the runs that ended (COMPLETED, FAILED,
-- CANCELLED); the recovery rate over the runs that met a transient failure; cost per task over
-- every run. Latency percentiles need ordered sets SQLite lacks: `autonomic kpis` computes them
-- from run_kpi_facts (ended_at - created_at).
CREATE VIEW kpis AS
SELECT
    agent,
    task_type,
    COUNT(*) AS runs,
    SUM(CASE WHEN ended_at IS NOT NULL THEN 1 ELSE 0 END) AS ended,
    SUM(CASE WHEN status = 'COMPLETED' THEN 1 ELSE 0 END) AS completed,
    1.0 * SUM(CASE WHEN status = 'COMPLETED' THEN 1 ELSE 0 END)
        / NULLIF(SUM(CASE WHEN ended_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS completion_rate,
    1.0 * SUM(CASE WHEN status = 'COMPLETED' THEN steps ELSE 0 END)
        / NULLIF(SUM(CASE WHEN status = 'COMPLETED' THEN 1 ELSE 0 END), 0)
        AS mean_steps_to_completion,
    1.0 * SUM(CASE WHEN transient = 1 AND status = 'COMPLETED' AND human_repair = 0 THEN 1 ELSE 0 END)
        / NULLIF(SUM(transient), 0) AS recovery_rate,
    1.0 * SUM(human) / COUNT(*) AS human_intervention_rate,
    SUM(cost_usd) / COUNT(*) AS cost_per_task
FROM run_kpi_facts
GROUP BY agent, task_type;
