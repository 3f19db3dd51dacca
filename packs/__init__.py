"""Packs: the paid units of work a run executes (decision, url, diagnostic).

Pure Python: nothing here imports Django (except ``apps.py``) or another app of the project.
The registry in ``packs.registry`` is the only place that lists them.
"""
