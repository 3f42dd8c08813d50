"""Sources: a pandas or dask DataFrame validated, its UIDs indexed, its rows read for tasks."""
