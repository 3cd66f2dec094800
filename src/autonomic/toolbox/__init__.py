"""toolbox."""
