"""Release safety for agent developers: shadow runs of a candidate version with side effects off
(``shadow``), canary promotion by outcome quality (``canary``, with the sequential test of
``sequential``). docs/release-safety.md."""
