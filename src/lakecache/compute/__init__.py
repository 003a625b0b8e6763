"""Compute: where jobs run. Templates (sizes on a compute resource), queues (an
ordered list of templates that a job falls back along), jobs and their timelines,
the scheduler that admits them, backends that run them and the runner at a site.

Layers, lowest first: ``model`` (value objects) and ``tables``; ``placement``
(a pure function: which template, and why not the others); the catalog queries,
each layer a module extending the one before (``pools``: capacity, templates,
queues; ``jobs``: submit, read, outputs listed; ``admission``: placement by
compare-and-swap, deadlines, agents' presence; ``attempts``: fenced claims,
heartbeats and ends), joined as ``store.ComputeStore``; ``tokens`` (job-scoped
tokens); ``outputs`` (collecting a job's outputs folder into the lake);
``backends`` (local processes, containers, Ray, Kubernetes behind one protocol);
``doorbell`` (runners woken by changes, not only by their poll); ``together``
(writes of a process that arrive together share a transaction); ``hooks`` (what
runs beside each attempt, found as entry points: tracking is one; compute imports
nothing above it); ``runner`` (the job loop of a site's agent); ``sdk``.
"""
