"""penetrator.job: the installer payload the operator's Job runs (``penetrator job``).

Modules (each usable on its own; the CLI only wires them, see ``entry``):

    credentials  the credentials directory (passwd | sshkey, token, known_hosts)
    redact       scrub secret values from any text
    hostkeys     host-key policy: tofu pins, strict, insecure
    transport    one asyncssh connection per machine, timeouts, retry classification
    template     install template -> quoted command lines and 0600 files
    package      packages by SHA-256: probe, SFTP push or HTTP pull, verify, extract
    pkgserver    the HTTP package server on the proxy node
    cluster      Nodes through the API, read only: labelled?, Ready
    runner       per machine steps with retries, the bounded-concurrency job
    report       results: JSON lines, results file, live summary
    report_api   results into the task's results ConfigMap (batched)
    entry        files in, exit code out
"""
