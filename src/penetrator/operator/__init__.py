"""penetrator.operator: the NodeTask operator (Kopf), wiring only.

* ``settings``  - ``Settings``: one object, from PENETRATOR_* variables and CLI options.
* ``handlers``  - Kopf: a daemon per NodeTask, Job events wake it, an index of all
  tasks (claims: no machine in two active tasks), login, startup, liveness.
* ``runtime``   - ``Runtime.step``: observe (labelled Nodes, the Job, the results
  ConfigMap: a fixed number of requests), decide (``penetrator.plan.reconcile``),
  apply (server-side apply, create for the Job, foreground delete, Events, status).
* ``lease``     - ``LeaseElector``: only the holder of edge-system/penetrator-operator acts.
* ``metrics``   - Prometheus: tasks by state, machines by phase, rounds, round duration,
  API errors.

Run: ``penetrator operator [--kubeconfig FILE]`` (deploy/operator.yaml in-cluster).
"""
