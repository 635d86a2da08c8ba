"""penetrator.operator: the NodeTask operator (Kopf), wiring only.

* ``handlers``  - Kopf: a daemon per NodeTask, Job events wake it, an index of all
  tasks (claims: no machine in two active tasks), login, startup, liveness.
* ``runtime``   - ``Runtime.step``: observe (labelled Nodes, the Job, the results
  ConfigMap: a fixed number of requests), decide (``penetrator.plan.reconcile``),
  apply (server-side apply, create for the Job, foreground delete, Events, status).
* ``lease``     - ``LeaseElector``: only the holder of edge-system/penetrator-operator acts.
* ``metrics``   - Prometheus: tasks by state, machines by phase, rounds, round duration,
  API errors.

Run: ``penetrator operator [--config FILE] [--kubeconfig FILE]`` (deploy/penetrator.yaml
in-cluster); the settings are ``penetrator.api.settings.Settings``, read by the CLI.
"""
