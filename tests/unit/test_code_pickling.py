"""Functions and classes shipped to workers keep their source file, so remote tracebacks show
their lines (cloudpickle 3.1.3 replaces it with "<dynamic-code>" by default)."""

from __future__ import annotations

import pickle
import traceback

from rtml._serialization._code import dumps_code


def test_a_function_pickled_by_value_keeps_its_file_and_lines():
    def fails():
        raise ValueError("from the pickled function")

    f = pickle.loads(dumps_code(fails))
    assert f.__code__.co_filename == __file__
    try:
        f()
    except ValueError as e:
        text = "".join(traceback.format_exception(e))
    assert 'raise ValueError("from the pickled function")' in text


def test_a_class_pickled_by_value_keeps_its_methods_file():
    class C:
        def m(self):
            return 1

    assert pickle.loads(dumps_code(C)).m.__code__.co_filename == __file__
