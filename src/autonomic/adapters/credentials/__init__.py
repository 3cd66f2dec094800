"""Secret sources for the credentials port: the environment (``env.py``) and a file (``file.py``)."""
