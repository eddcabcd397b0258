"""Real-server tests (gunicorn, uWSGI, Celery prefork, multiprocessing.Pool)."""
