"""The engine: what runs a job (server side, never imported by the faces).

``jobs.run_job`` runs one job: a ``coordinator.Coordinator`` schedules its trials on the
workers of ``cluster``, asks and tells the Optuna ``studies`` through the ``ledger``, takes over
what a killed coordinator left (``recovery``), narrows the learning-rate ranges first
(``lr_range``); ``service`` is the loop of ``tuner serve`` that claims queued jobs, and
``job_ends`` closes the books of jobs that ended without their coordinator.
"""
