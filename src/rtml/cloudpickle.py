"""cloudpickle under rtml's name (``rtml.cloudpickle``, as ``ray.cloudpickle``).

rtml pickles task arguments, results and put values with cloudpickle, so what is registered
here (``register_pickle_by_value(module)``) is honoured for them: values of that module travel
by value and workers need not be able to import it.
"""

from cloudpickle import (
    CloudPickler,
    Pickler,
    dump,
    dumps,
    load,
    loads,
    register_pickle_by_value,
    unregister_pickle_by_value,
)

__all__ = [
    "CloudPickler",
    "Pickler",
    "dump",
    "dumps",
    "load",
    "loads",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
]
