"""Compute: where jobs run. Templates (sizes on a compute resource), queues (an
ordered list of templates that a job falls back along), jobs and their timelines,
the scheduler that admits them, backends that run them and the runner at a site.

Layers, lowest first: ``model`` (value objects) and ``tables``; ``placement``
(a pure function: which template, and why not the others); ``store`` (the
catalog queries, admission by compare-and-swap); ``backends`` (local processes
behind one protocol); ``runner`` (the job loop of a site's agent); ``sdk``.
"""
