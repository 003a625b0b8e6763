"""Run tracking: experiments, runs, params, metrics, system metrics, artifacts and logs."""
