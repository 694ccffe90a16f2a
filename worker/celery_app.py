"""The Celery application, configured from the app's :class:`~app.settings.Settings` (read once).

Broker: ``settings.broker_url`` (Redis for several machines), or, when unset, the embedded
default: kombu's ``filesystem://`` transport with its message folders under
``{data_dir}/broker`` - no server to run, good for one machine. No result backend: the state of a
run is in the SQL store, never in Celery.

Delivery: late acknowledgements (a task is acknowledged when it returns, so a worker that dies
mid-task leaves it to be delivered again), one message prefetched per process, and a task whose
worker process was lost is rejected back to the queue. Tasks are idempotent on
(run, iteration, step), so a second delivery repeats nothing (:mod:`worker.steps`).

Queues: ``io`` (search and download: the ``fetch`` task) and ``gpu`` (training and scoring: the
``learn`` task), so download machines and GPU machines can be scaled apart.
"""

from __future__ import annotations

from typing import Any, Final

from celery import Celery
from kombu import Queue

from app.settings import Settings, get_settings

IO_QUEUE: Final = "io"
GPU_QUEUE: Final = "gpu"
FETCH_TASK: Final = "ie.fetch"
LEARN_TASK: Final = "ie.learn"


def broker_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The broker URL and its transport options for ``settings``."""
    if settings.broker_url:
        options: dict[str, Any] = {"visibility_timeout": settings.broker_visibility_timeout}
        if settings.broker_key_prefix:
            options["global_keyprefix"] = settings.broker_key_prefix
        return settings.broker_url, options
    folder = settings.broker_dir / "messages"
    processed = settings.broker_dir / "processed"
    control = settings.broker_dir / "control"  # exchange tables (kombu's default: ./control)
    for path in (folder, processed, control):
        path.mkdir(parents=True, exist_ok=True)
    return "filesystem://", {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(processed),
        "control_folder": str(control),
        "store_processed": False,
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery application for ``settings``."""
    url, options = broker_options(settings)
    celery = Celery("internet_explorer", broker=url, include=["worker.tasks"])
    celery.conf.update(
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_queues=(Queue(IO_QUEUE), Queue(GPU_QUEUE)),
        task_default_queue=IO_QUEUE,
        task_routes={FETCH_TASK: {"queue": IO_QUEUE}, LEARN_TASK: {"queue": GPU_QUEUE}},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return celery


_clients: dict[tuple[str, ...], Celery] = {}


def celery_for(settings: Settings) -> Celery:
    """The Celery application for ``settings``' broker, made once per broker and process
    (the app sends with it; settings built by hand in tests get their own broker)."""
    key = (
        settings.broker_url or "",
        str(settings.broker_dir),
        settings.broker_key_prefix,
        str(settings.broker_visibility_timeout),
    )
    if key not in _clients:
        _clients[key] = make_celery(settings)
    return _clients[key]


app: Celery = celery_for(get_settings())
"""The process's Celery application (``celery -A worker.celery_app worker -Q io,gpu``)."""
