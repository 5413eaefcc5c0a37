"""2D core of the FSD toolkit: priors, schedules, the DDIM / SDS / FSD update rules, metrics and studies."""

__version__ = "0.1.0"
