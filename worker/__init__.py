"""The Celery worker: a thin adapter that runs the engine one step at a time for the app.

``celery_app`` (the Celery application), ``tasks`` (the two tasks), ``steps`` (the run state
machine the tasks call), ``runtime`` (per-process engine state), ``progress`` (progress and
cancel checks through the store) and ``persist`` (an iteration's results into the store).
"""
