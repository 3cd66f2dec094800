"""The audit log's checks: ``verify`` (the log and every journal against it) and ``checkpoint``
(signed checkpoints, exports an outsider verifies with the public key). The records themselves
and their chain are ``core/audit.py``; the checkers are ``core/verification.py``."""
