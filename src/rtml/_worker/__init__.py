"""Worker processes: the task executor and (later) actor host."""
