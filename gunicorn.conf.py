"""gunicorn's settings file: read from the working directory by every `gunicorn` started from the project root —
the Procfile's `web` (make run), the image's command and the compose file's (WORKDIR /app). The command lines
keep the rest (bind, workers, threads, worker class); an option given there wins over this file.
"""

# Seconds an idle keep-alive connection stays open. gunicorn's default, 2 s, is shorter than the idle time of
# most client pools and of every load balancer: a client reusing a connection just as gunicorn closes it sees
# a reset (1 in 992 requests from outside). Measured with bench/keepalive.py (16 clients, idle gaps of 2 ± 0.2 s
# on one connection each): 38 of 192 requests failed with 2 s, none with 75 s. 75 s is above the usual load
# balancer idle timeout (60 s, e.g. AWS ALB's default): behind one, the balancer's must stay shorter than this
# (docs/operations.md "Keep-alive"). An idle connection costs a socket in a worker's poller, not a thread.
keepalive = 75
