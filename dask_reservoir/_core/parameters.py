"""The ``Parameters`` section of ``AsyncReservoir``'s docstring: what each option means.

Kept beside :class:`~dask_reservoir._core.options.ReservoirOptions` (where each default is
written once) rather than inside the facade, which it would double in length.  The facade's
docstring reads it in, so ``help(AsyncReservoir)`` and the rendered docs show it in place.
"""

from __future__ import annotations

__all__ = ["PARAMETERS", "with_parameters"]

PARAMETERS = """\
Parameters
    ----------
    source : pandas.DataFrame or dask.dataframe.DataFrame
        One row per job.  A dask source is not collected: its rows are read on the workers.
    function_to_run : callable
        ``function_to_run(row: dict) -> dict | list[dict] | pandas.DataFrame``, run on the
        workers.  It travels by value (cloudpickle), so it may be defined in ``__main__``
        or a notebook.  An empty list/frame means "nothing for this UID".
    max_reservoir_samples : int
        Capacity of the reservoir, in entries (UIDs).
    max_reservoir_bytes : int or str, optional
        A bound in bytes on the entries in the reservoir (``"4GiB"``, parsed by dask's
        ``parse_bytes``), for samples of varying sizes: storing an entry evicts the oldest
        until the entries take at most this (arrays count their ``nbytes``, text its length,
        other values 8 bytes).  It combines with ``max_reservoir_samples``.  An entry heavier
        than the whole bound fails its UID (:class:`~dask_reservoir.errors.StoreError`).  The
        results in flight or waiting to be ingested are bounded by it too: no more rows than fit
        in it at the mean result size measured so far.  It does not cover the entries evicted
        while an epoch still reads them (at most ``max_reservoir_samples / 2`` of them, see
        ``stats().pinned_bytes``) nor the batches built ahead (``prefetch_batches``).
    min_reservoir_samples : int, keyword-only
        ``iter()`` blocks until the reservoir holds ``min(min_reservoir_samples, rows)`` entries.
    client : None, str or distributed.Client
        None: the default client if any, else an embedded ``LocalCluster`` owned by the
        reservoir; a str: the address of a scheduler (client owned); a ``Client``: used
        as is and never closed here.
    nb_workers : int, optional
        Worker processes of the embedded ``LocalCluster`` (default: CPU count).
    uid_column : str
        Column naming each row; when absent, UIDs are the positions ``0..n-1``.
    max_jobs_at_once : int, optional
        Back-pressure bound, in dask tasks (jobs, as in trw): most tasks in flight, and
        at most that many tasks of ``rows_per_job`` rows in flight or finished and
        waiting to be ingested, and no more rows than ``max_reservoir_samples`` (results
        beyond it would only evict each other) unless tasks are larger: at least two tasks
        (one with ``max_jobs_at_once=1``), whatever their size.  It never shrinks tasks: each
        task still packs as many rows as ``rows_per_job`` says.  Default: ``max(2 x worker threads,
        8)`` tasks (dask needs several tasks in flight to hide its per-task latency),
        following the cluster.  ``stats().loading_held_seconds`` says how long the bound
        kept worker threads idle.  (It used to count source rows: see the README.)
    reservoir_sampler : Sampler, optional
        Order of entries in an epoch; default source order (:class:`SequentialSampler`).
    batch_size : int
        Entries per batch.
    drop_last : bool
        Drop a final batch of fewer than ``batch_size`` entries.
    collate_fn : callable, optional
        Called with the list of row dicts of a batch; default :func:`collate_rows`.
    maximum_number_of_samples_per_epoch : int, optional
        Rows yielded per epoch at most.
    max_reservoir_replacement_size : int, optional
        Entries ingested per ``iter()`` at most (None: all waiting).  Not applied while
        the reservoir is below its minimum.
    source_sampler : Sampler, optional
        Order in which source rows are submitted, per pass; default sequential.
    rows_per_job : int or "auto"
        Source rows per dask task.  ``"auto"`` (the default) starts at 1 and, from the
        first finished task on, sizes tasks to run about 75 ms on the workers and return
        at most 8 MiB of arrays, from the measured time and size per row: fast loaders are
        not capped by dask's per-task cost (about 1 ms), slow ones (a row of 75 ms or
        more) stay one row per task.  Tasks stay small enough for the default number of
        them to fit in the bound.
    retries : int
        Retries of a failing row.  With ``rows_per_job=1`` dask retries the task
        (``retries=``) and a row that still fails is a failed job (``jobs_failed``);
        otherwise, the default ``"auto"`` included, each row is retried inside its task
        and one that still fails is a failed row (``rows_failed``) while the task's
        other rows load.
    on_error : {"skip", "raise"}
        "skip": a failed job is logged and recorded in ``stats().failures``, and the UID
        is tried again on the next pass.  "raise": the next ``iter()``/``next()`` raises
        :class:`JobError`, one per failure in order (none is dropped).
    timeout : float or str, optional
        Longest ``iter()`` waits for the minimum; then ``TimeoutError``.  ``JobError``
        comes earlier when the rows that can still load cannot reach the minimum.
    max_failures_per_uid : int or None
        A UID failing this many times in a row is quarantined (no longer submitted;
        see :meth:`release_quarantine`).
    on_cluster_loss : {"raise", "serve"}
        When the client gives up on its scheduler: raise :class:`ClusterLostError` at the
        next ``iter()``/``next()``, or keep serving the loaded entries.
    prefetch_batches : int
        Batches of the current epoch built ahead, in a thread of the reservoir, so that
        ``next()`` hands over a batch already built (while the training step runs).
        0 builds each batch inside ``next()``.  It is one budget for all the iterators
        alive: at most ``prefetch_batches`` batches are built ahead however many there
        are, and when a newer epoch starts, the batches built ahead for the older ones
        are dropped (built again by their next ``next()``).
    max_stale_epochs : int
        An epoch's iterator reads the entries it started with, which keeps them in memory
        (and, once the spare slots are used, pauses the refresh).  An iterator not advanced
        while more than ``max_stale_epochs`` newer epochs start (``iter()`` calls) is
        expired: its entries are released, and its next ``next()`` raises
        :class:`~dask_reservoir.errors.IteratorExpiredError` saying how far behind it is.
        With the default 2, a reference kept by a validation loop and read after one or
        two training epochs still serves its whole epoch, and threads each advancing
        their own epochs are unaffected; an abandoned iterator never stops the refresh
        for more than two epochs.  With ``deterministic=True``, ``iter()`` also expires
        iterators of earlier epochs, oldest first, whose entries leave no room for the
        epoch's exact entries, rather than wait for them forever.
    progress : bool
        Show a tqdm bar (``pip install dask_reservoir[progress]``; plain lines on stderr
        without tqdm) while ``iter()`` waits for the minimum.
    job_timeout : float or str, optional
        Seconds one call of ``function_to_run`` may run on a worker; a longer call is
        abandoned and counted as a failure of its UID (:class:`JobTimeoutError`), and the
        task, so the worker's slot, is freed.  The call itself cannot be interrupted: it
        goes on in a daemon thread of the worker (with the worker's context) until it
        returns; at most 4 such calls run per worker process, then new calls wait.
    loader : {"thread", "process", "auto"}, optional
        Where jobs are submitted and their results received.  ``"thread"``: a thread of
        this process.  ``"process"``: a loader process (a child Python) with its own dask
        client of the same scheduler runs the jobs and ships finished entries here, so
        dask's event loop and (de)serialisation never compete with the training loop for
        this process's GIL; it needs a scheduler reachable by address and a pandas source
        (``ValueError`` otherwise), and starts in about half a second.  ``"auto"``: the
        process where it can be used, else the thread.  None (the default) reads the dask
        config ``dask_reservoir.loader`` (``"thread"`` unless set, e.g. by the environment
        variable ``DASK_DASK_RESERVOIR__LOADER=auto``).  ``stats().loader`` says which runs.
    rank, world_size : int
        Data-parallel training: ``world_size`` reservoirs (one per rank, usually one per
        process, all on one cluster) share the source without talking to each other.  In
        each pass over the source, rank ``rank`` loads only its shard: the rows a
        permutation seeded by the pass number deals to it (:func:`shard_positions`), the
        same on every rank.  Shards are disjoint within a pass and cover the source; they
        change from pass to pass, so every rank meets every UID over time.  With
        ``world_size > 1`` every epoch of every rank serves exactly ``R`` entries, ``R =
        maximum_number_of_samples_per_epoch`` if given, else ``min_reservoir_samples`` (at
        most the source's rows): ``iter()`` waits until the reservoir holds ``R`` entries,
        and the sampler's order is cut to ``R`` (or repeated up to ``R``), so every rank
        yields ``len(iter(r))`` = ``ceil(R / batch_size)`` batches (``floor`` with
        ``drop_last``) and a collective in the training step never waits for a rank whose
        epoch ended early.  Reservoirs made by :meth:`subsample`/:meth:`subsample_uids` are
        not sharded.

    deterministic : bool
        The content and order of epoch ``k`` depend only on the samplers' seeds and
        ``k``, not on worker count or timing: every ``iter()`` ingests exactly the next
        ``max_reservoir_replacement_size`` entries (required) in submission order, waiting
        for them (the first epoch: the minimum); a result that arrives before those
        submitted earlier is held back.  It holds for a deterministic ``function_to_run``
        that does not fail (a retried row goes later in the order) and no task lost by
        the cluster.  It costs the waits: ``iter()`` blocks until those exact entries are
        loaded (see the benchmark's W1 row).

    batch_format : {"numpy", "pandas", "torch"}
        What a batch is: the collated ``dict[str, numpy.ndarray]`` (default), a pandas
        ``DataFrame`` with one row per sample (arrays of more than one dimension in an
        ``object`` column, one array per row), or the dict with numeric arrays as torch
        tensors (``pip install dask_reservoir[torch]``).  Converted where the batch is
        built (ahead, in the reservoir's batch thread).  Not with a ``collate_fn``.
    batched : bool
        Vectorized ``function_to_run``: it receives a ``pandas.DataFrame`` of up to
        ``rows_per_job`` source rows (the UID column included, the source's dtypes)
        and returns a ``DataFrame``, or a dict of equal-length arrays, of produced rows,
        each carrying in the UID column the source UID it belongs to (0..n rows per
        UID, only UIDs of the chunk).  Results travel and are stored as columns; pandas
        extension dtypes (categorical, string, nullable, time-zone aware) come back in
        ``batch_format="pandas"`` batches and :meth:`to_pandas`.  A chunk whose call
        raises (after ``retries``) or returns something else fails all its UIDs with a
        :class:`JobError` naming the function, the UIDs and what was wrong.  With
        ``rows_per_job="auto"``, chunks are sized from the measured cost per row.
    passes : int, optional
        Passes over the source to load, then stop submitting (``passes=1``: each row of
        this rank loaded once, the analysis convention).  :meth:`wait_loaded` waits until
        they are done; epochs go on serving what is loaded.  With ranks, each pass gives each
        row to exactly one rank; shards may differ by one row (no padding, no repeats).
        Default None: load forever, fresh results replacing the oldest.
    transform : callable, optional
        ``transform(sample, rng) -> sample``, applied at every serve to each sample (a
        private copy: a dict column -> value) before collation, in the reservoir's batch
        thread while the training step runs (in ``next()`` for a batch whose build had not
        started, as any batch, and with ``prefetch_batches=0``): the cheap random part, while
        ``function_to_run`` is the expensive deterministic part.  ``rng`` is a
        ``numpy.random.Generator`` drawn from ``transform_seed``, the epoch number and the
        batch's place in the epoch, so a batch is augmented the same way when built again
        and a run with ``deterministic=True`` and the same seeds is reproduced exactly.
    transform_batched : bool
        ``transform`` takes and returns a whole batch (``dict[str, numpy.ndarray]``),
        vectorized, after collation (and after ``collate_fn``, when given).
    transform_seed : int, optional
        Seed of ``transform``'s generators.  None: an entropy drawn at construction, so
        each run augments differently.
    cache : str or os.PathLike, optional
        A directory or fsspec URL (``"s3://bucket/prefix"``, ``"memory://x"``) that keeps
        every result: the persistent tier.  A result is read from it instead of running
        ``function_to_run`` when its key matches: the UID, a digest of the source row (see
        ``cache_row_hash``) and a fingerprint of the function's code (bytecode, constants,
        referenced globals and closures, user modules recursively, name and version of
        installed packages, and ``cache_version``).  Reads and writes run on the workers;
        each result is one Parquet file readable with ``pandas.read_parquet``, written
        atomically and checked when read (a corrupt file is recomputed).  The workers must
        all see the directory (checked at start).  Not with ``batched=True``.
    cache_version : str, optional
        Mixed into the function's fingerprint: change it to recompute every result.
    cache_row_hash : bool
        Key results by a digest of the source row too (default), so that an edited row is
        recomputed; False keys them by UID and function only.
    cache_storage_options : dict, optional
        Passed to fsspec for ``cache`` (credentials, endpoints).
    resources : dict, optional
        dask worker resources each task needs (``{"CPU_LOAD": 1}``): only workers started
        with them (``dask worker --resources CPU_LOAD=1``) run the reservoir's tasks, so GPU
        workers of a shared cluster are left alone.  As ``Client.submit(resources=)``.
    priority : int
        dask priority of every task the reservoir submits (default 0; negative: after other
        work, so a filling reservoir does not starve a colleague's interactive work).
    workers : str or list of str, optional
        Worker addresses, names or hosts that may run the tasks; with ``allow_other_workers``
        only a preference.  As ``Client.submit(workers=, allow_other_workers=)``.
    allow_other_workers : bool
        See ``workers``.
    annotations : dict, optional
        dask annotations put on every task the reservoir submits (``dask.annotate``), for
        the scheduler plugins and dashboards of a shared cluster; ``priority``,
        ``resources``, ``workers``, ``allow_other_workers`` and ``retries`` are options.
    upload_code : bool
        Upload dask_reservoir's own code to a cluster whose scheduler or workers do not have
        it installed (default True), with dask worker and scheduler plugins, so that workers
        which join later get it too.  Processes that have this version installed are left as
        they are; the plugins are removed when the last reservoir of the client closes.  No
        effect on the cluster a reservoir starts itself."""


def with_parameters(doc: str | None) -> str:
    """``doc`` with its ``%(parameters)s`` line replaced by :data:`PARAMETERS`.

    Examples
    --------
    >>> with_parameters("    %(parameters)s").split()[:2]
    ['Parameters', '----------']
    """
    return (doc or "").replace("%(parameters)s", PARAMETERS)
