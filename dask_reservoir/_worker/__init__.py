"""What runs on the dask workers.

The call trampoline, chunks, checks of produced values, job timeouts, the shipped function,
and the wire types a task carries.
"""
