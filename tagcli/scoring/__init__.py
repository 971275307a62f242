"""Scoring: the scorer over record batches, and what runs it over files (above `io/`, which only reads
and writes tables, work units and part directories).

    scorer.py       TagScorer: a table in, predictions + status + error out (CLI, Python API, Ray)
    runner.py       a whole file through windows, work units and parts: --shard, --resume, --devices
    checkpoints.py  a window's finished batches on disk, so a killed run loses little
    evaluation.py   a labeled file scored and compared with its labels (`tagcli eval`)
    references.py   a reference distribution for a pack's percentiles (`tagcli pack reference`)
    distributed.py  Ray Data actors over whole windows of a file
"""
