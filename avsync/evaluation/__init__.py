"""Evaluation behind ``avsync bench``: the papers' protocols and metrics (protocol.py) and
clip cutting (data.py). The top-level ``bench/`` folder holds the scripts that run them on the
project's media and the results they wrote."""
