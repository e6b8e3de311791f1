"""The pieces of ``experiments/report.py``, by concept: where a run's files are (``archive``),
the tables (``tables``), the figures (``figures``) and the published numbers beside them
(``literature``). ``report.py`` renders RESULTS.md from them and is the command."""
