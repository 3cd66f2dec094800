"""The overnight ledger reconciliation: the demo agent of autonomic.

A bank's general ledger and its statement disagree; the agent reads both with a read-only SQL tool,
computes the differences, posts adjusting entries through an idempotent tool, files a report through
a non-idempotent one, and answers with the report.
"""
