"""Example agents shipped with autonomic; ``autonomic demo`` runs them."""
