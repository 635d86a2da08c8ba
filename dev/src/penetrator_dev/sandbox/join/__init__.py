"""The sandbox's STAND-IN `edgeadm` (not a real join: no kubelet, no container
runtime; for the 1,000-machine benchmarks; real kubeadm machines: `sandbox up
--real-join N`, realjoin.py): joins an edge machine at the API level of kubeadm
join (token discovery with CA pin, TLS bootstrap through a CSR signed by the
real controller manager, Node + Lease), and one heartbeat service per
intranet that keeps every joined machine Ready.

    python -m penetrator_dev.sandbox.join join|reset ...     (program.py)
    python -m penetrator_dev.sandbox.join.heartbeat ...      (heartbeat.py)
    build_join_package(dest)                             (package.py)
"""
