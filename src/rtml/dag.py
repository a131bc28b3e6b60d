"""Ray's DAG API (``rtml.dag``, as ``ray.dag``): build a task graph lazily, run it later.

::

    from rtml.dag import InputNode

    with InputNode() as inp:
        dag = add.bind(double.bind(inp), 1)
    rtml.get(dag.execute(20))  # 41

``f.bind(...)`` on a remote function, ``Cls.bind(...)`` on an actor class and
``node.method.bind(...)`` on such a node (or ``handle.method.bind(...)`` on a live actor)
build nodes; ``node.execute(*inputs)`` submits every node once and returns the ObjectRef of
the node it is called on.
"""

from rtml._runtime._dag import (
    ClassMethodNode,
    ClassNode,
    DAGNode,
    FunctionNode,
    InputAttributeNode,
    InputNode,
    MultiOutputNode,
)

__all__ = [
    "ClassMethodNode",
    "ClassNode",
    "DAGNode",
    "FunctionNode",
    "InputAttributeNode",
    "InputNode",
    "MultiOutputNode",
]
