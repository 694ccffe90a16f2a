"""The web application: a thin FastAPI layer over the SQL store (see DESIGN.md).

Importing this package imports nothing heavy: the worker imports :mod:`app.store` and
:mod:`app.settings` without pulling in FastAPI, and nothing here ever imports torch.
"""
