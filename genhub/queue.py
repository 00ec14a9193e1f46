"""Tasks as thin interfaces: a task takes ids, calls one service, and knows how to enqueue itself."""

from django_q.tasks import async_task


def task(func):
    """Gives `func` an `enqueue(*args)` that puts it on the django-q2 queue by dotted path.

    Only primitive ids cross the queue: payloads are pickled and signed, and a model instance
    would be stale by the time a worker runs it.
    """
    path = f"{func.__module__}.{func.__name__}"

    def enqueue(*args):
        # django-q2 keeps at most 100 characters of a task's name.
        name = f"{func.__name__}({', '.join(map(str, args))})"
        return async_task(path, *args, task_name=name if len(name) <= 100 else name[:99] + "…")

    func.enqueue = enqueue
    return func
