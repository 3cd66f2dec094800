"""Every Redis adapter, in one place: counters (tenant budgets), breakers (the gateway's shared
circuits), buckets (shared rate limits) and the plan cache, over ``client`` (what they do alike).
They import only ``autonomic.ports``, ``autonomic.core``, ``autonomic.errors`` and ``redis`` (when
the first client is made); whoever builds one imports it lazily."""
