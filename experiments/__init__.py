"""Experiment scripts of jaxunlearn: thin, importable, each with ``run(config, workdir)``."""
