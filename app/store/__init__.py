"""The SQL store: models, engine/session helpers and store functions, with no FastAPI imports.

The web app and the worker both use it. Modules (each a noun for one responsibility):

* :mod:`app.store.models` - the tables;
* :mod:`app.store.db` - engines and sessions (``make_engine``, ``session_scope``);
* :mod:`app.store.migrate` - ``upgrade(url)``: ``alembic upgrade head`` from code;
* :mod:`app.store.runs`, :mod:`~app.store.uploads`, :mod:`~app.store.iterations`,
  :mod:`~app.store.concepts`, :mod:`~app.store.images`, :mod:`~app.store.vetoes`,
  :mod:`~app.store.events`, :mod:`~app.store.revocations` - store functions, one module per
  noun.

Store functions take a ``Session`` first, flush when they need ids, and never commit: the caller
owns the transaction (and enqueues work only after committing it).
"""
