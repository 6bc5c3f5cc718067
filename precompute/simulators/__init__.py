"""Simulated surveys with known truth (the demo and the tests): SDSS-like ugriz galaxies and FIRST-like radio
sources, written in the layouts the survey readers in ``core.surveys`` take."""
