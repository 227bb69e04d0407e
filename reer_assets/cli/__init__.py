"""The `reer` command (``main.py``), one module per command group, each registering its own subcommands:
``model``, ``ingest``, ``synthesis`` (synthesize-query), ``search`` (segment, score, search), ``lineage``,
``serve``, ``export``, ``recover``, ``bench``, ``evaluation`` (eval), ``experiment``, ``plan``, ``imports`` (import);
``common.py`` what they share. Heavy imports stay inside the commands so ``reer --help`` stays fast."""
