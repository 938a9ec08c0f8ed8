"""The management frontend's Redis access.

    store.py     ``Store``: typed reads that raise "not found", and every write as one
                 WATCH/MULTI/EXEC transaction with its change-feed entry
    reads.py     reading records: one at a time inside transactions, whole lists in
                 pipelines
    policies.py  ``PolicyStore``: setting a stage's selection policy, reporting and
                 forgetting what it learned
    pipelines.py ``PipelineStore``: setting an app's whole pipeline (its stages) after
                 checking every rule a pipeline keeps
    feeds.py     whether a pipeline's stages still take what the stage before answers,
                 when a link or a new current version changes that
    cleanup.py   deleting learned state of epochs an app no longer uses, in batches

It imports the contract (``state``) for key names and record encodings, and
``errors``; nothing here knows HTTP. ``api`` and ``app`` import it.
"""
