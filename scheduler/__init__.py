"""The producer side of the queue: the job record (:mod:`scheduler.records`) and its one owner in
Redis (:mod:`scheduler.jobs`), the chunk message (:mod:`scheduler.protocol`), the Celery app both sides share
(:mod:`scheduler.broker`), input scanning, routing to device queues, the Python client, the embedded fleet,
and the job CLI."""
