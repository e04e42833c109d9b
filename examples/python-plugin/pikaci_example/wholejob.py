from .executor import Executor


class WholeJob(Executor):
    pass
