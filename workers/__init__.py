"""Workers: the Celery task that takes a job's chunks, the batcher that groups items of many jobs into batch
predictions, the compute process that runs them, outcome reporting, the lost-chunk sweeper, the worker CLI.

Workers depend on :mod:`scheduler` (the job record, the chunk protocol, the Celery app) and on
:mod:`engine`; nothing there imports from here.
"""
