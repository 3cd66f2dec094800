"""Tools as capability contracts: a schema the model sees, and metadata the runtime enforces."""
